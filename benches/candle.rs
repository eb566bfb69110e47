//! The candle ops (feature `candle`) against candle-nn's, forward and forward+backward:
//! `cargo bench --features candle-nn --bench candle`.
//!
//! Groups (ids are `ours|candle_nn/ROWSxCOLS`), each at 256x1000, 8x128256 and 4096x32000, in
//! a one-thread rayon pool (`_1t`, candle's CPU ops run on the calling thread) and in the
//! global pool (all threads):
//!
//! * `candle_softmax`: `softmax_kernels::candle::softmax_last_dim` vs
//!   `candle_nn::ops::softmax_last_dim` (forward).
//! * `candle_ce_fwd_bwd`: the loss and its gradient through candle's autograd
//!   (`Var`, `backward`): `softmax_kernels::candle::cross_entropy` vs
//!   `candle_nn::loss::cross_entropy`.
//! * `direct_softmax`: the crate's own `softmax` into a buffer allocated once (`ours`), into
//!   a fresh buffer per call (`ours_fresh_output`, the same work as `softmax_last_dim`, which
//!   allocates its output as every candle op does), and `softmax_last_dim_inplace` on a
//!   tensor allocated once: the yardsticks for the adapter's overhead (it adds no copy).
//!
//! Inputs are logits uniform in `[-5, 5]` from a fixed seed.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use softmax_kernels::candle as skc;
use softmax_kernels::CrossEntropyOptions;

const SHAPES: &[(usize, usize)] = &[(256, 1000), (8, 128_256), (4096, 32000)];

fn logits(rows: usize, cols: usize) -> Vec<f32> {
    let mut g = StdRng::seed_from_u64(0xca9d_be4c);
    (0..rows * cols)
        .map(|_| g.gen_range(-5.0f32..5.0))
        .collect()
}

fn groups(c: &mut Criterion, threads: Option<usize>) {
    let suffix = if threads.is_some() { "_1t" } else { "" };
    let pool = threads.map(|n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    });
    let run = |f: &mut (dyn FnMut() + Send)| match &pool {
        Some(p) => p.install(f),
        None => f(),
    };
    for &(rows, cols) in SHAPES {
        let data = logits(rows, cols);
        let x = Tensor::from_vec(data.clone(), (rows, cols), &Device::Cpu).unwrap();
        let labels: Vec<u32> = (0..rows).map(|r| ((r * 7919) % cols) as u32).collect();
        let t = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
        let id = format!("{rows}x{cols}");
        let n = (rows * cols) as u64;
        let large = rows * cols >= 1 << 22;
        let tune = |g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>| {
            g.throughput(Throughput::Elements(n));
            if large {
                g.sampling_mode(SamplingMode::Flat).sample_size(10);
                g.measurement_time(Duration::from_secs(8));
            }
        };

        let mut g = c.benchmark_group(format!("candle_softmax{suffix}"));
        tune(&mut g);
        g.bench_function(BenchmarkId::new("ours", &id), |b| {
            b.iter(|| run(&mut || drop(black_box(skc::softmax_last_dim(&x).unwrap()))))
        });
        g.bench_function(BenchmarkId::new("candle_nn", &id), |b| {
            b.iter(|| run(&mut || drop(black_box(candle_nn::ops::softmax_last_dim(&x).unwrap()))))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("direct_softmax{suffix}"));
        tune(&mut g);
        let mut y = vec![0.0f32; rows * cols];
        g.bench_function(BenchmarkId::new("ours", &id), |b| {
            b.iter(|| {
                run(&mut || softmax_kernels::softmax(black_box(&data), &mut y, cols).unwrap())
            })
        });
        // The direct call into a fresh output per call: what `softmax_last_dim` does
        // through candle, which hands every op's output over as a new storage.
        g.bench_function(BenchmarkId::new("ours_fresh_output", &id), |b| {
            b.iter(|| {
                run(&mut || {
                    let mut y = vec![0.0f32; rows * cols];
                    softmax_kernels::softmax(black_box(&data), &mut y, cols).unwrap();
                    drop(black_box(y));
                })
            })
        });
        // The in-place op on a tensor allocated once (its values drift to a fixed point,
        // which does not change the work).
        let z = x.copy().unwrap();
        g.bench_function(BenchmarkId::new("candle_inplace", &id), |b| {
            b.iter(|| run(&mut || skc::softmax_last_dim_inplace(black_box(&z)).unwrap()))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("candle_ce_fwd_bwd{suffix}"));
        tune(&mut g);
        let o = CrossEntropyOptions::default();
        g.bench_function(BenchmarkId::new("ours", &id), |b| {
            b.iter(|| {
                run(&mut || {
                    let v = Var::from_tensor(&x).unwrap();
                    let loss = skc::cross_entropy(v.as_tensor(), &t, &o).unwrap();
                    black_box(loss.backward().unwrap());
                })
            })
        });
        g.bench_function(BenchmarkId::new("candle_nn", &id), |b| {
            b.iter(|| {
                run(&mut || {
                    let v = Var::from_tensor(&x).unwrap();
                    let loss = candle_nn::loss::cross_entropy(v.as_tensor(), &t).unwrap();
                    black_box(loss.backward().unwrap());
                })
            })
        });
        g.finish();
    }
}

fn benches(c: &mut Criterion) {
    groups(c, Some(1));
    groups(c, None);
}

criterion_group!(candle, benches);
criterion_main!(candle);
