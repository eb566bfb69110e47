//! A vocabulary-parallel output layer on MPI: each rank holds the rows `W[c0..c1, :]` and
//! `b[c0..c1]` of a 32000-class language-model head, and the ranks together train it (and the
//! activations `A` below it) on per-token log-probs with an entropy bonus, as an RL
//! fine-tuning step does:
//!
//! ```text
//! loss = -mean_b logp(token_b) - 0.01 mean_b H_b      (temperature 0.8, some rows ignored)
//! ```
//!
//! One step on every rank:
//!
//! 1. `linear_token_shard_states`: the per-row states of its classes (no logits held);
//! 2. **one collective**: an all-gather of the states (`8 * B` doubles per rank), merged
//!    locally in rank order, so every rank has the same merged states;
//! 3. `finalize_states`: `logp`, the entropy and `lse` of the whole vocabulary;
//! 4. `linear_token_shard_backward`: its shard's `dW`, `db` and a partial `dA`;
//! 5. **one collective**: an all-reduce (sum) of the partial `dA`;
//! 6. SGD on its `W` and `b` rows, and on `A` (every rank the same).
//!
//! Every rank also trains the same model in one process (`linear_token_logprobs` and
//! `linear_token_logprobs_backward` on the whole `W`) and compares the losses, its own rows of
//! `W` and `b`, and `A`; the largest differences are reduced over the ranks and printed by rank
//! 0. The exit code is non-zero when one is above the tolerance (the two computations agree up
//! to f32 rounding: the merge of states and the sum of `dA` are associated differently).
//!
//! ```text
//! cargo build --release --features mpi --example vocab_parallel
//! mpirun -np 4 target/release/examples/vocab_parallel
//! ```
//!
//! (As root, Open MPI wants `--allow-run-as-root`; with more ranks than cores,
//! `--oversubscribe`.) Needs an MPI library (Open MPI: Debian's `libopenmpi-dev openmpi-bin`)
//! and libclang (`libclang-dev`) for the bindings.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::traits::*;
use rand::{Rng, SeedableRng};
use softmax_kernels::{
    finalize_states, merge_states, Kernels, LinearTokenGrads, LinearTokenOptions, MatrixLayout,
    RowState, Shard, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs, TokenSaved,
};

/// Rows (tokens) per step, hidden size, vocabulary, steps, learning rate.
const B: usize = 64;
const D: usize = 128;
const C: usize = 32000;
const STEPS: usize = 3;
const LR: f32 = 0.5;
const ENTROPY_BONUS: f32 = 0.01;
const IGNORE: i64 = -100;
/// The largest accepted difference between the sharded and the one-process model, relative
/// (`|x - y| / max(1, |y|)`), after `STEPS` steps.
const TOLERANCE: f64 = 1e-5;

/// The model and its data: the same on every rank (a fixed seed).
struct Model {
    a: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
}

fn init() -> (Model, Vec<i64>) {
    let mut g = rand::rngs::StdRng::seed_from_u64(2026);
    let a = (0..B * D).map(|_| g.gen_range(-1.0f32..1.0)).collect();
    let w = (0..C * D).map(|_| g.gen_range(-0.3f32..0.3)).collect();
    let bias = (0..C).map(|_| g.gen_range(-0.5f32..0.5)).collect();
    let tokens = (0..B)
        .map(|r| {
            if r % 9 == 4 {
                IGNORE
            } else {
                g.gen_range(0..C as i64)
            }
        })
        .collect();
    (Model { a, w, bias }, tokens)
}

/// The upstream gradients of the loss with respect to `logp` and the entropy, per row.
fn upstream(tokens: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let n = tokens.iter().filter(|&&t| t != IGNORE).count().max(1) as f32;
    let per = |v: f32| {
        tokens
            .iter()
            .map(|&t| if t == IGNORE { 0.0 } else { v / n })
            .collect()
    };
    (per(-1.0), per(-ENTROPY_BONUS))
}

/// The loss from the per-row outputs.
fn loss(tokens: &[i64], logp: &[f32], h: &[f32]) -> f64 {
    let (gl, gh) = upstream(tokens);
    (0..tokens.len())
        .map(|r| gl[r] as f64 * logp[r] as f64 + gh[r] as f64 * h[r] as f64)
        .sum()
}

/// `x -= lr * g`.
fn sgd(x: &mut [f32], g: &[f32]) {
    for (x, g) in x.iter_mut().zip(g) {
        *x -= LR * g;
    }
}

/// `max |x - y| / max(1, |y|)`.
fn diff(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&x, &y)| (x as f64 - y as f64).abs() / (y.abs() as f64).max(1.0))
        .fold(0.0, f64::max)
}

/// One step of the model in one process; returns the loss before the step.
fn step_whole(k: &Kernels, m: &mut Model, tokens: &[i64], o: &LinearTokenOptions) -> f64 {
    let lay = MatrixLayout::new(C, D);
    let (mut lp, mut h, mut lse) = (vec![0.0f32; B], vec![0.0f32; B], vec![0.0f32; B]);
    k.linear_token_logprobs(
        &m.a,
        &m.w,
        lay,
        Some(&m.bias),
        tokens,
        o,
        TokenLogprobOutputs::new(&mut lp)
            .entropy(&mut h)
            .lse(&mut lse),
    )
    .expect("one-process forward");
    let (gl, gh) = upstream(tokens);
    let (mut da, mut dw, mut db) = (vec![0.0f32; B * D], vec![0.0f32; C * D], vec![0.0f32; C]);
    k.linear_token_logprobs_backward(
        &m.a,
        &m.w,
        lay,
        Some(&m.bias),
        tokens,
        o,
        TokenSaved {
            lse: &lse,
            entropy: Some(&h),
        },
        TokenGrads {
            logp: Some(&gl),
            entropy: Some(&gh),
        },
        &mut LinearTokenGrads {
            da: Some(&mut da),
            dw: Some(&mut dw),
            db: Some(&mut db),
        },
    )
    .expect("one-process backward");
    sgd(&mut m.w, &dw);
    sgd(&mut m.bias, &db);
    sgd(&mut m.a, &da);
    loss(tokens, &lp, &h)
}

fn main() -> ExitCode {
    let universe = mpi::initialize().expect("MPI is initialized once");
    let world = universe.world();
    let (rank, ranks) = (world.rank() as usize, world.size() as usize);
    let k = Kernels::best();
    let o = LinearTokenOptions::new(TokenLogprobOptions::default().temperature(0.8));

    // This rank's classes: an even split of the vocabulary.
    let (c0, c1) = (rank * C / ranks, (rank + 1) * C / ranks);
    let cs = c1 - c0;
    let shard = Shard::new(c0, C);
    let lay = MatrixLayout::new(cs, D);
    let (whole0, tokens) = init();
    let mut part = Model {
        a: whole0.a.clone(),
        w: whole0.w[c0 * D..c1 * D].to_vec(),
        bias: whole0.bias[c0..c1].to_vec(),
    };
    let mut whole = whole0;
    let (gl, gh) = upstream(&tokens);
    if rank == 0 {
        println!(
            "vocab_parallel: {ranks} ranks, B = {B}, D = {D}, C = {C} ({} classes per rank), \
             tier {}, {STEPS} SGD steps at lr {LR}",
            C / ranks,
            k.isa()
        );
    }

    let mut max_loss_diff = 0.0f64;
    let (mut t_shard, mut t_whole) = (Duration::ZERO, Duration::ZERO);
    for step in 0..STEPS {
        let t = Instant::now();
        // 1. This shard's states.
        let mut states = vec![RowState::EMPTY; B];
        k.linear_token_shard_states(
            &part.a,
            &part.w,
            lay,
            Some(&part.bias),
            shard,
            &tokens,
            &o,
            &mut states,
        )
        .expect("shard states");
        // 2. All-gather the states (`RowState::LEN` doubles each, viewed as f64s without a
        //    copy) and merge them in rank order.
        let mut gathered = vec![RowState::EMPTY; B * ranks];
        world.all_gather_into(
            RowState::as_f64s(&states),
            RowState::as_f64s_mut(&mut gathered),
        );
        let per_rank: Vec<&[RowState]> = gathered.chunks(B).collect();
        let mut merged = per_rank[0].to_vec();
        for other in &per_rank[1..] {
            merge_states(&mut merged, other).expect("same row count");
        }
        // 3. The whole vocabulary's logp, entropy and lse.
        let (mut lp, mut h, mut lse) = (vec![0.0f32; B], vec![0.0f32; B], vec![0.0f32; B]);
        finalize_states(
            &merged,
            &tokens,
            C,
            &o.token,
            TokenLogprobOutputs::new(&mut lp)
                .entropy(&mut h)
                .lse(&mut lse),
        )
        .expect("every shard merged once");
        // 4. This shard's dW, db and partial dA.
        let (mut da_part, mut dw, mut db) =
            (vec![0.0f32; B * D], vec![0.0f32; cs * D], vec![0.0f32; cs]);
        k.linear_token_shard_backward(
            &part.a,
            &part.w,
            lay,
            Some(&part.bias),
            shard,
            &tokens,
            &o,
            TokenSaved {
                lse: &lse,
                entropy: Some(&h),
            },
            TokenGrads {
                logp: Some(&gl),
                entropy: Some(&gh),
            },
            &mut LinearTokenGrads {
                da: Some(&mut da_part),
                dw: Some(&mut dw),
                db: Some(&mut db),
            },
        )
        .expect("shard backward");
        // 5. dA summed over the shards.
        let mut da = vec![0.0f32; B * D];
        world.all_reduce_into(&da_part[..], &mut da[..], SystemOperation::sum());
        // 6. The SGD step.
        sgd(&mut part.w, &dw);
        sgd(&mut part.bias, &db);
        sgd(&mut part.a, &da);
        let loss_shard = loss(&tokens, &lp, &h);
        t_shard += t.elapsed();

        let t = Instant::now();
        let loss_whole = step_whole(k, &mut whole, &tokens, &o);
        t_whole += t.elapsed();
        let d = (loss_shard - loss_whole).abs() / loss_whole.abs().max(1.0);
        max_loss_diff = max_loss_diff.max(d);
        if rank == 0 {
            println!("step {step}: loss {loss_shard:.6} (sharded), {loss_whole:.6} (one process)");
        }
    }

    // This rank's rows of W and b, and A, against the one-process model.
    let local = [
        max_loss_diff,
        diff(&part.w, &whole.w[c0 * D..c1 * D]),
        diff(&part.bias, &whole.bias[c0..c1]),
        diff(&part.a, &whole.a),
    ];
    let mut worst = [0.0f64; 4];
    world.all_reduce_into(&local[..], &mut worst[..], SystemOperation::max());
    let ok = worst.iter().all(|&d| d <= TOLERANCE);
    if rank == 0 {
        println!(
            "largest relative difference, sharded vs one process, over {ranks} ranks: \
             loss {:.2e}, W {:.2e}, b {:.2e}, A {:.2e} (tolerance {TOLERANCE:.0e}): {}",
            worst[0],
            worst[1],
            worst[2],
            worst[3],
            if ok { "ok" } else { "FAILED" }
        );
        println!(
            "time per step on rank 0: sharded {:.1} ms (with the collectives), one process \
             {:.1} ms",
            t_shard.as_secs_f64() * 1e3 / STEPS as f64,
            t_whole.as_secs_f64() * 1e3 / STEPS as f64
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
