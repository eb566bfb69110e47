//! Criterion benches of the fused cross-entropy family.
//!
//! Groups (ids are `tier/ROWSxCOLS`; the scalar tier is the f64 oracle, named `reference`):
//!
//! * `cross_entropy_fwd_bwd`: loss and gradient into a separate buffer (class labels, PyTorch
//!   defaults: mean reduction, `ignore_index = -100`), every tier, in the global rayon pool.
//! * `cross_entropy_loss`: the loss-only sweep (`Logits::Read`), every tier.
//! * `cross_entropy_inplace`: the gradient written over the logits, AVX-512 (or the best tier).
//!   The buffer is not restored between iterations: from the second one on it holds the
//!   previous gradient, which costs the same (the kernels have no data-dependent branches and
//!   the values stay normal floats).
//! * `cross_entropy_unfused`: the same loss and gradient from the crate's separate kernels on
//!   the best tier: `log_softmax` into a buffer, `-mean log p_t` gathered by a plain loop, then
//!   `softmax` into the gradient and a fix-up pass `g = (p - onehot) / N` (rayon over rows).
//!   Compare with `cross_entropy_fwd_bwd/<best tier>` to see what fusion buys.
//! * `cross_entropy_1t`: inside a one-thread rayon pool, the best tier's fused fwd+bwd, its
//!   loss-only sweep and `Kernels::logsumexp` (the loss-only sweep's lower bound: one read
//!   sweep, no label work), so one-thread numbers and the loss-only / logsumexp comparison come
//!   from one run (the global-pool groups give the all-threads numbers).
//!
//! Every group uses `Throughput::Elements(rows * cols)`. Inputs are logits uniform in `[-5, 5]`
//! and uniform labels from fixed seeds. The reference skips 8x128256 and 4096x32000. The whole
//! run takes about 4-6 minutes on 2 cores; `-- --quick` or a filter (`-- fwd_bwd/avx512`) is
//! faster.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use softmax_kernels::{CrossEntropyOptions, CrossEntropyOutputs, Isa, Kernels, Logits, Targets};

/// Shapes of the per-tier groups: tiny rows, mid-size batches, LM vocabularies.
const SHAPES: &[(usize, usize)] = &[
    (1, 10),
    (64, 10),
    (256, 1000),
    (1024, 1000),
    (32, 32000),
    (8, 128_256),
    (4096, 32000),
];

/// Shapes of the one-thread group.
const ONE_THREAD_SHAPES: &[(usize, usize)] = &[(256, 1000), (4096, 32000), (8, 128_256)];

/// The reference tier (f64) is only benched up to this many elements.
const REFERENCE_MAX_ELEMS: usize = 4 << 20;

/// From this many elements a shape counts as large: 10 flat samples.
const LARGE_ELEMS: usize = 1 << 20;

/// The tiers this CPU runs, by bench name (`reference` for the scalar oracle).
fn tiers() -> Vec<(&'static str, &'static Kernels)> {
    Isa::available()
        .into_iter()
        .map(|isa| {
            let name = if isa == Isa::Scalar {
                "reference"
            } else {
                isa.name()
            };
            (name, Kernels::for_isa(isa).expect("listed as available"))
        })
        .collect()
}

/// The tier of the single-tier groups: AVX-512 where the CPU has it, else the best.
fn best() -> (&'static str, &'static Kernels) {
    let k = Kernels::for_isa(Isa::Avx512).unwrap_or_else(Kernels::best);
    (k.isa().name(), k)
}

fn label((rows, cols): (usize, usize)) -> String {
    format!("{rows}x{cols}")
}

/// `n` logits uniform in `[-5, 5]`, always the same.
fn logits(n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(0x5EED_C0DE);
    (0..n).map(|_| rng.gen_range(-5.0f32..=5.0)).collect()
}

/// `rows` labels uniform in `0..cols`, always the same.
fn labels(rows: usize, cols: usize) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(0x1AB_E15 ^ cols as u64);
    (0..rows).map(|_| rng.gen_range(0..cols as i64)).collect()
}

/// Sample settings by size: small shapes take many cheap samples, large ones (up to a few
/// hundred milliseconds per call) 10 flat ones.
fn configure<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>, elems: usize) {
    if elems >= LARGE_ELEMS {
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat);
    } else {
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(800))
            .sampling_mode(SamplingMode::Auto);
    }
}

fn fwd_bwd(k: &Kernels, x: &[f32], t: &[i64], g: &mut [f32], cols: usize) -> f32 {
    k.cross_entropy_fwd_bwd(x, t, g, cols, &CrossEntropyOptions::default())
        .unwrap()
}

fn loss_only(k: &Kernels, x: &[f32], t: &[i64], cols: usize) -> f32 {
    k.cross_entropy(x, t, cols, &CrossEntropyOptions::default())
        .unwrap()
}

/// The unfused mean cross-entropy and its gradient from the crate's separate kernels.
fn unfused(k: &Kernels, x: &[f32], t: &[i64], ls: &mut [f32], g: &mut [f32], cols: usize) -> f32 {
    let rows = t.len();
    k.log_softmax(x, ls, cols).unwrap();
    let mut loss = 0.0f64;
    for (r, &l) in t.iter().enumerate() {
        loss -= ls[r * cols + l as usize] as f64;
    }
    let loss = (loss / rows as f64) as f32;
    k.softmax(x, g, cols).unwrap();
    let inv = 1.0 / rows as f32;
    // The fix-up pass over row blocks of about 64 KiB, in the current rayon pool.
    let per = (16 * 1024 / cols).max(1);
    g.par_chunks_mut(per * cols)
        .zip(t.par_chunks(per))
        .for_each(|(gb, tb)| {
            for (row, &l) in gb.chunks_mut(cols).zip(tb) {
                for v in row.iter_mut() {
                    *v *= inv;
                }
                row[l as usize] -= inv;
            }
        });
    loss
}

/// Fused fwd+bwd and loss-only on every tier.
fn per_tier_groups(c: &mut Criterion, x: &[f32], g: &mut [f32]) {
    let tiers = tiers();
    for (name, fused) in [
        ("cross_entropy_fwd_bwd", true),
        ("cross_entropy_loss", false),
    ] {
        let mut grp = c.benchmark_group(name);
        for &(rows, cols) in SHAPES {
            let n = rows * cols;
            configure(&mut grp, n);
            grp.throughput(Throughput::Elements(n as u64));
            let (xs, gs) = (&x[..n], &mut g[..n]);
            let t = labels(rows, cols);
            for &(tier, k) in &tiers {
                if tier == "reference" && n > REFERENCE_MAX_ELEMS {
                    continue;
                }
                grp.bench_function(BenchmarkId::new(tier, label((rows, cols))), |b| {
                    if fused {
                        b.iter(|| {
                            fwd_bwd(k, black_box(xs), black_box(&t), black_box(&mut *gs), cols)
                        })
                    } else {
                        b.iter(|| loss_only(k, black_box(xs), black_box(&t), cols))
                    }
                });
            }
        }
        grp.finish();
    }
}

/// In place and unfused, on the best tier.
fn best_tier_groups(c: &mut Criterion, x: &[f32], g: &mut [f32], ls: &mut [f32]) {
    let (tier, k) = best();
    let mut grp = c.benchmark_group("cross_entropy_inplace");
    for &(rows, cols) in SHAPES {
        let n = rows * cols;
        configure(&mut grp, n);
        grp.throughput(Throughput::Elements(n as u64));
        let gs = &mut g[..n];
        gs.copy_from_slice(&x[..n]);
        let t = labels(rows, cols);
        let opts = CrossEntropyOptions::default();
        grp.bench_function(BenchmarkId::new(tier, label((rows, cols))), |b| {
            b.iter(|| {
                k.cross_entropy_fwd_bwd_inplace(black_box(&mut *gs), black_box(&t), cols, &opts)
                    .unwrap()
            })
        });
    }
    grp.finish();

    let mut grp = c.benchmark_group("cross_entropy_unfused");
    for &(rows, cols) in SHAPES {
        let n = rows * cols;
        configure(&mut grp, n);
        grp.throughput(Throughput::Elements(n as u64));
        let (xs, gs, lss) = (&x[..n], &mut g[..n], &mut ls[..n]);
        let t = labels(rows, cols);
        grp.bench_function(BenchmarkId::new(tier, label((rows, cols))), |b| {
            b.iter(|| {
                unfused(
                    k,
                    black_box(xs),
                    black_box(&t),
                    black_box(&mut *lss),
                    black_box(&mut *gs),
                    cols,
                )
            })
        });
    }
    grp.finish();
}

/// The best tier inside a one-thread pool: fused fwd+bwd, loss only and logsumexp.
fn one_thread_group(c: &mut Criterion, x: &[f32], g: &mut [f32]) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let (tier, k) = best();
    let mut grp = c.benchmark_group("cross_entropy_1t");
    for &(rows, cols) in ONE_THREAD_SHAPES {
        let n = rows * cols;
        configure(&mut grp, n);
        grp.throughput(Throughput::Elements(n as u64));
        let (xs, gs) = (&x[..n], &mut g[..n]);
        let t = labels(rows, cols);
        let shape = label((rows, cols));
        grp.bench_function(BenchmarkId::new(format!("{tier}_fwd_bwd"), &shape), |b| {
            pool.install(|| {
                b.iter(|| fwd_bwd(k, black_box(xs), black_box(&t), black_box(&mut *gs), cols))
            })
        });
        grp.bench_function(BenchmarkId::new(format!("{tier}_loss"), &shape), |b| {
            pool.install(|| b.iter(|| loss_only(k, black_box(xs), black_box(&t), cols)))
        });
        let mut lse = vec![0.0f32; rows];
        grp.bench_function(BenchmarkId::new(format!("{tier}_logsumexp"), &shape), |b| {
            pool.install(|| {
                b.iter(|| {
                    k.logsumexp(black_box(xs), black_box(&mut lse), cols)
                        .unwrap()
                })
            })
        });
    }
    grp.finish();
}

fn benches(c: &mut Criterion) {
    let max = SHAPES.iter().map(|&(r, k)| r * k).max().unwrap_or(0);
    let x = logits(max);
    let mut g = vec![0.0f32; max];
    let mut ls = vec![0.0f32; max];
    // A sanity check that the fused and unfused paths compute the same loss (so the comparison
    // is between equal work).
    {
        let (_, k) = best();
        let (rows, cols) = (64, 1000);
        let t = labels(rows, cols);
        let n = rows * cols;
        let a = fwd_bwd(k, &x[..n], &t, &mut g[..n], cols);
        let mut out = CrossEntropyOutputs::default();
        let b = k
            .cross_entropy_with(
                Logits::Read(&x[..n]),
                Targets::Classes(&t),
                cols,
                &CrossEntropyOptions::default(),
                &mut out,
            )
            .unwrap()
            .loss;
        let u = unfused(k, &x[..n], &t, &mut ls[..n], &mut g[..n], cols);
        assert!(
            (a - u).abs() <= 1e-5 * a.abs() && a == b,
            "fused {a}, loss-only {b}, unfused {u}"
        );
    }
    per_tier_groups(c, &x, &mut g);
    best_tier_groups(c, &x, &mut g, &mut ls);
    one_thread_group(c, &x, &mut g);
}

criterion_group!(cross_entropy_benches, benches);
criterion_main!(cross_entropy_benches);
