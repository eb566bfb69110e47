//! The fused linear token log-probs (`softmax_kernels::linear_token`) against the unfused
//! composition on every tier: `linear_forward`, the token kernels, `linear_backward_input`,
//! `weight_grad`, `bias_grad`. The logits of a chunk have the bits of the whole batch's, so the
//! per-row outputs and `dA` must match bit for bit; `dW` and `db` are summed by chunk and must
//! match within the rounding of those sums.

#[macro_use]
mod common;

use rand::Rng;
use softmax_kernels::{
    finalize_states, merge_states, Error, Kernels, LinearTokenGrads, LinearTokenOptions,
    MatrixLayout, RowState, Shard, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs,
    TokenSaved,
};

struct Problem {
    b: usize,
    c: usize,
    d: usize,
    ld: usize,
    a: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    tokens: Vec<i64>,
    gl: Vec<f32>,
    gh: Vec<f32>,
}

fn problem(b: usize, c: usize, d: usize, seed: u64) -> Problem {
    let mut g = common::rng(seed);
    let ld = d + 3;
    let a = common::logits(&mut g, b * d, 1.0);
    let w = common::logits(&mut g, c * ld, 0.5);
    let bias = common::logits(&mut g, c, 0.5);
    let tokens = (0..b)
        .map(|r| {
            if r % 7 == 3 {
                -100
            } else {
                g.gen_range(0..c) as i64
            }
        })
        .collect();
    let gl = (0..b).map(|_| g.gen_range(-1.0..1.0)).collect();
    let gh = (0..b).map(|_| g.gen_range(-0.5..0.5)).collect();
    Problem {
        b,
        c,
        d,
        ld,
        a,
        w,
        bias,
        tokens,
        gl,
        gh,
    }
}

/// The unfused composition: (logp, H, lse, dA, dW, db).
#[allow(clippy::type_complexity)]
fn unfused(
    k: &Kernels,
    p: &Problem,
    o: &TokenLogprobOptions,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let lay = MatrixLayout::new(p.c, p.d).with_ld(p.ld);
    let mut z = vec![0.0f32; p.b * p.c];
    k.linear_forward(&p.a, &p.w, lay, Some(&p.bias), &mut z)
        .unwrap();
    let (mut lp, mut h, mut lse) = (vec![0.0; p.b], vec![0.0; p.b], vec![0.0; p.b]);
    k.token_logprobs(
        &z,
        &p.tokens,
        p.c,
        o,
        TokenLogprobOutputs::new(&mut lp)
            .entropy(&mut h)
            .lse(&mut lse),
    )
    .unwrap();
    k.token_logprobs_backward_inplace(
        &mut z,
        &p.tokens,
        p.c,
        o,
        TokenSaved {
            lse: &lse,
            entropy: Some(&h),
        },
        TokenGrads {
            logp: Some(&p.gl),
            entropy: Some(&p.gh),
        },
    )
    .unwrap();
    let mut da = vec![0.0f32; p.b * p.d];
    k.linear_backward_input(&z, &p.w, lay, &mut da).unwrap();
    let mut dw = vec![0.0f32; p.c * p.ld];
    k.weight_grad(1.0, &z, &p.a, 0.0, &mut dw, lay).unwrap();
    let mut db = vec![0.0f32; p.c];
    k.bias_grad(1.0, &z, 0.0, &mut db).unwrap();
    (lp, h, lse, da, dw, db)
}

/// `|x - y| <= tol * (1 + |y|)` elementwise.
fn near(what: &str, x: &[f32], y: &[f32], tol: f32) {
    assert_eq!(x.len(), y.len(), "{what}: lengths");
    for (i, (&u, &v)) in x.iter().zip(y).enumerate() {
        assert!(
            (u - v).abs() <= tol * (1.0 + v.abs()),
            "{what}[{i}]: {u} vs {v}"
        );
    }
}

per_tier! {
    matches_unfused => |k: &Kernels| {
        for &(b, c, d) in &[(1usize, 5usize, 3usize), (9, 37, 16), (40, 300, 24), (5, 2000, 8)] {
            let p = problem(b, c, d, (b * c + d) as u64);
            let lay = MatrixLayout::new(c, d).with_ld(p.ld);
            for temp in [1.0f32, 0.7] {
                let to = TokenLogprobOptions::default().temperature(temp);
                let (lp, h, lse, da, dw, db) = unfused(k, &p, &to);
                for chunk in [None, Some(1usize), Some(3)] {
                    let ctx = format!("{} {b}x{c}x{d} T={temp} chunk {chunk:?}", k.isa());
                    let mut o = LinearTokenOptions::new(to);
                    if let Some(r) = chunk {
                        o = o.chunk_rows(r);
                    }
                    // Forward.
                    let (mut lp2, mut h2, mut lse2) = (vec![0.0; b], vec![0.0; b], vec![0.0; b]);
                    k.linear_token_logprobs(&p.a, &p.w, lay, Some(&p.bias), &p.tokens, &o,
                        TokenLogprobOutputs::new(&mut lp2).entropy(&mut h2).lse(&mut lse2))
                        .unwrap();
                    common::ok(&ctx, common::oracle::check_bits("logp", &lp2, &lp));
                    common::ok(&ctx, common::oracle::check_bits("entropy", &h2, &h));
                    common::ok(&ctx, common::oracle::check_bits("lse", &lse2, &lse));
                    // Backward from the saved forward.
                    let grads = TokenGrads { logp: Some(&p.gl), entropy: Some(&p.gh) };
                    let saved = TokenSaved { lse: &lse2, entropy: Some(&h2) };
                    let (mut da2, mut dw2, mut db2) =
                        (vec![9.0f32; b * d], vec![9.0f32; c * p.ld], vec![9.0f32; c]);
                    k.linear_token_logprobs_backward(&p.a, &p.w, lay, Some(&p.bias), &p.tokens,
                        &o, saved, grads, &mut LinearTokenGrads {
                            da: Some(&mut da2), dw: Some(&mut dw2), db: Some(&mut db2) })
                        .unwrap();
                    common::ok(&ctx, common::oracle::check_bits("dA", &da2, &da));
                    for r in 0..c {
                        // (The padding of dW's rows is untouched: 9.0.)
                        near(&format!("{ctx} dW row {r}"), &dw2[r * p.ld..r * p.ld + d],
                            &dw[r * p.ld..r * p.ld + d], 1e-5);
                        assert!(dw2[r * p.ld + d..(r + 1) * p.ld].iter().all(|&v| v == 9.0),
                            "{ctx}: dW padding written");
                    }
                    near(&format!("{ctx} db"), &db2, &db, 1e-5);
                    // Fused forward+backward: the same outputs; gradients within rounding of
                    // the fused kernel against the separate backward.
                    let (mut lp3, mut h3) = (vec![0.0; b], vec![0.0; b]);
                    let (mut da3, mut dw3, mut db3) =
                        (vec![0.0f32; b * d], vec![0.0f32; c * p.ld], vec![0.0f32; c]);
                    k.linear_token_logprobs_fwd_bwd(&p.a, &p.w, lay, Some(&p.bias), &p.tokens,
                        &o, grads, TokenLogprobOutputs::new(&mut lp3).entropy(&mut h3),
                        &mut LinearTokenGrads {
                            da: Some(&mut da3), dw: Some(&mut dw3), db: Some(&mut db3) })
                        .unwrap();
                    common::ok(&ctx, common::oracle::check_bits("fused logp", &lp3, &lp));
                    common::ok(&ctx, common::oracle::check_bits("fused entropy", &h3, &h));
                    near(&format!("{ctx} fused dA"), &da3, &da, 1e-5);
                    near(&format!("{ctx} fused db"), &db3, &db, 1e-5);
                    // Accumulate: a second fused call adds the same gradients.
                    let oa = o.accumulate(true);
                    k.linear_token_logprobs_fwd_bwd(&p.a, &p.w, lay, Some(&p.bias), &p.tokens,
                        &oa, grads, TokenLogprobOutputs::new(&mut lp3),
                        &mut LinearTokenGrads { da: None, dw: None, db: Some(&mut db3) })
                        .unwrap();
                    let twice: Vec<f32> = db.iter().map(|v| 2.0 * v).collect();
                    near(&format!("{ctx} accumulated db"), &db3, &twice, 1e-5);
                }
            }
        }
    },
}

#[test]
fn errors_write_nothing() {
    let k = Kernels::best();
    let lay = MatrixLayout::new(3, 2);
    let (a, w) = ([0.0f32; 4], [0.0f32; 6]);
    let mut lp = [9.0f32; 2];
    let o = LinearTokenOptions::default();
    let e = k
        .linear_token_logprobs(
            &a,
            &w,
            lay,
            None,
            &[0i64, 3],
            &o,
            TokenLogprobOutputs::new(&mut lp),
        )
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
        .linear_token_logprobs(
            &a,
            &w,
            lay,
            Some(&[0.0; 2]),
            &[0i64, 1],
            &o,
            TokenLogprobOutputs::new(&mut lp),
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { arg: "bias", .. }),
        "{e:?}"
    );
    let e = k
        .linear_token_logprobs(
            &a,
            &w,
            lay,
            None,
            &[0i64, 1],
            &o.chunk_rows(0),
            TokenLogprobOutputs::new(&mut lp),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidOption {
                name: "chunk_rows",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(lp, [9.0; 2]);
    let mut db = [9.0f32; 3];
    let e = k
        .linear_token_logprobs_backward(
            &a,
            &w,
            lay,
            None,
            &[0i64, 1],
            &o,
            TokenSaved {
                lse: &[0.0; 2],
                entropy: None,
            },
            TokenGrads {
                logp: None,
                entropy: Some(&[1.0; 2]),
            },
            &mut LinearTokenGrads {
                db: Some(&mut db),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::MissingOutput { .. }), "{e:?}");
    assert_eq!(db, [9.0; 3]);
}

/// Random split points of `0..c` into `parts` shards (some may be empty or one class).
fn split(g: &mut impl Rng, c: usize, parts: usize) -> Vec<(usize, usize)> {
    let mut cuts: Vec<usize> = (0..parts - 1).map(|_| g.gen_range(0..=c)).collect();
    cuts.push(0);
    cuts.push(c);
    cuts.sort_unstable();
    cuts.windows(2).map(|w| (w[0], w[1] - w[0])).collect()
}

per_tier! {
    shards_match_unsharded => |k: &Kernels| {
        let mut g = common::rng(21);
        for &(b, c, d) in &[(1usize, 5usize, 3usize), (9, 37, 16), (30, 1000, 12)] {
            let p = problem(b, c, d, (3 * b + c + d) as u64);
            for temp in [1.0f32, 0.5] {
                let to = TokenLogprobOptions::default().temperature(temp);
                let (lp, h, lse, da, dw, db) = unfused(k, &p, &to);
                for parts in [1usize, 2, 3, 5] {
                    let shards = split(&mut g, c, parts);
                    let ctx = format!("{} {b}x{c}x{d} T={temp} shards {shards:?}", k.isa());
                    let o = LinearTokenOptions::new(to).chunk_rows(g.gen_range(1..=b));
                    let lay = |cs: usize| MatrixLayout::new(cs, d).with_ld(p.ld);
                    let wsh = |off: usize, cs: usize| &p.w[off * p.ld..(off + cs) * p.ld];
                    // Every shard's states, merged in a random order.
                    let mut all: Vec<Vec<RowState>> = shards
                        .iter()
                        .map(|&(off, cs)| {
                            let mut st = vec![RowState::EMPTY; b];
                            k.linear_token_shard_states(&p.a, wsh(off, cs), lay(cs),
                                Some(&p.bias[off..off + cs]), Shard::new(off, c), &p.tokens,
                                &o, &mut st)
                                .unwrap();
                            st
                        })
                        .collect();
                    let mut merged = all.swap_remove(g.gen_range(0..all.len()));
                    while !all.is_empty() {
                        let next = all.swap_remove(g.gen_range(0..all.len()));
                        merge_states(&mut merged, &next).unwrap();
                    }
                    let (mut lp2, mut h2, mut lse2) = (vec![0.0; b], vec![0.0; b], vec![0.0; b]);
                    finalize_states(&merged, &p.tokens, c, &to,
                        TokenLogprobOutputs::new(&mut lp2).entropy(&mut h2).lse(&mut lse2))
                        .unwrap();
                    near(&format!("{ctx} logp"), &lp2, &lp, 2e-6);
                    near(&format!("{ctx} entropy"), &h2, &h, 2e-6);
                    for r in 0..b {
                        if p.tokens[r] != -100 {
                            near(&format!("{ctx} lse row {r}"), &lse2[r..r + 1], &lse[r..r + 1],
                                2e-6);
                        }
                    }
                    // Every shard's backward: its dW and db rows, and dA summed over shards.
                    let grads = TokenGrads { logp: Some(&p.gl), entropy: Some(&p.gh) };
                    let saved = TokenSaved { lse: &lse2, entropy: Some(&h2) };
                    let mut da_sum = vec![0.0f32; b * d];
                    for &(off, cs) in &shards {
                        let (mut da2, mut dw2, mut db2) =
                            (vec![9.0f32; b * d], vec![9.0f32; cs * p.ld], vec![9.0f32; cs]);
                        k.linear_token_shard_backward(&p.a, wsh(off, cs), lay(cs),
                            Some(&p.bias[off..off + cs]), Shard::new(off, c), &p.tokens, &o,
                            saved, grads, &mut LinearTokenGrads {
                                da: Some(&mut da2), dw: Some(&mut dw2), db: Some(&mut db2) })
                            .unwrap();
                        for (s, v) in da_sum.iter_mut().zip(&da2) {
                            *s += v;
                        }
                        for r in 0..cs {
                            let q = off + r;
                            near(&format!("{ctx} dW row {q}"), &dw2[r * p.ld..r * p.ld + d],
                                &dw[q * p.ld..q * p.ld + d], 1e-5);
                        }
                        near(&format!("{ctx} db {off}+{cs}"), &db2, &db[off..off + cs], 1e-5);
                    }
                    near(&format!("{ctx} dA"), &da_sum, &da, 1e-5);
                }
            }
        }
    },
}

#[test]
fn shard_forms_check_their_arguments() {
    let k = Kernels::best();
    let p = problem(4, 10, 3, 5);
    let o = LinearTokenOptions::default();
    let lay = MatrixLayout::new(4, 3).with_ld(p.ld);
    let w = &p.w[..4 * p.ld];
    let mut st = vec![RowState::EMPTY; 4];
    // The shard's classes must lie in the vocabulary.
    let e = k
        .linear_token_shard_states(
            &p.a,
            w,
            lay,
            None,
            Shard::new(7, 10),
            &p.tokens,
            &o,
            &mut st,
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { name: "shard", .. }),
        "{e}"
    );
    // One state per row.
    let e = k
        .linear_token_shard_states(
            &p.a,
            w,
            lay,
            None,
            Shard::new(0, 10),
            &p.tokens,
            &o,
            &mut st[..3],
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { arg: "states", .. }),
        "{e}"
    );
    assert!(
        st.iter().all(|s| *s == RowState::EMPTY),
        "nothing written on an error"
    );
    // Tokens index the whole vocabulary, not the shard.
    let e = k
        .linear_token_shard_states(
            &p.a,
            w,
            lay,
            None,
            Shard::new(0, 10),
            &[0i64, 1, 2, 10],
            &o,
            &mut st,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadLabel {
                row: 3,
                label: 10,
                classes: 10
            }
        ),
        "{e}"
    );
    // A shard of no classes: empty states, a zero partial dA.
    let empty = MatrixLayout::new(0, 3);
    k.linear_token_shard_states(
        &p.a,
        &[],
        empty,
        None,
        Shard::new(10, 10),
        &p.tokens,
        &o,
        &mut st,
    )
    .unwrap();
    assert!(st.iter().all(|s| *s == RowState::EMPTY));
    let lse = [1.0f32; 4];
    let mut da = vec![9.0f32; 4 * 3];
    k.linear_token_shard_backward(
        &p.a,
        &[],
        empty,
        None,
        Shard::new(10, 10),
        &p.tokens,
        &o,
        TokenSaved {
            lse: &lse,
            entropy: None,
        },
        TokenGrads {
            logp: Some(&p.gl),
            entropy: None,
        },
        &mut LinearTokenGrads {
            da: Some(&mut da),
            dw: None,
            db: None,
        },
    )
    .unwrap();
    assert!(da.iter().all(|&v| v == 0.0));
}
