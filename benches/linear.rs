//! Criterion benches of the output-layer family (`softmax_kernels::linear`).
//!
//! Groups (ids are `tier/SHAPE`; the scalar tier is the f64 oracle and is named `reference`).
//! Each group whose name ends in `_1t` runs inside a one-thread rayon pool, the others in the
//! global pool (all threads), so the one-thread / all-threads ratio is read from one run.
//!
//! * `rank1_update_1t`, `rank1_update`: `W += alpha x y^T` for `CxD` = 10x784, 1000x2048,
//!   4096x4096, every tier; `Throughput::Elements(C * D)` (elements of W updated).
//! * `rmw_1t`, `rmw`: `w[i] += 1` over the 4096x4096 W (a plain read-modify-write stream, what
//!   the machine's memory allows for the rank-1 update).
//! * `rank_k_vs_sgemm_1t`: for `C x D` = 1000x2048 and `k` = 1..128, the streaming rank-k update
//!   (`rank_k/<tier>`) against one plain single-threaded `matrixmultiply::sgemm` call computing
//!   the same `W += delta^T A` (`sgemm`); ids `k=K`, `Throughput::Elements(C * D)`. Read the
//!   crossover from where `sgemm` overtakes.
//! * `weight_grad_1t`, `weight_grad`, `sgd_step_1t`, `sgd_step`: the best tier's weight gradient
//!   (`beta = 0` into dW) and fused SGD step (`beta = 1` on W) for `BxCxD` = 64x10x784,
//!   256x1000x2048, 512x32000x4096, `Throughput::Elements(2 B C D)`, i.e. read "elem/s" as
//!   FLOP/s. The largest shape is about 134 GFLOP (over a second a call): 10 flat samples.
//! * `sgemm_plain_1t`: one plain single-threaded `matrixmultiply::sgemm` call of the
//!   256x1000x2048 weight gradient, the yardstick for `weight_grad_1t`.
//!
//! Run all with `cargo bench --bench linear` (about 7 minutes on 2 cores), or a subset with a
//! filter (`cargo bench --bench linear -- rank1_update`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use softmax_kernels::{Isa, Kernels, MatrixLayout};

/// Shapes `(C, D)` of the rank-1 groups.
const RANK1_SHAPES: &[(usize, usize)] = &[(10, 784), (1000, 2048), (4096, 4096)];

/// Shapes `(B, C, D)` of the weight-gradient and SGD groups.
const GRAD_SHAPES: &[(usize, usize, usize)] =
    &[(64, 10, 784), (256, 1000, 2048), (512, 32000, 4096)];

/// `(C, D)` and ranks of the crossover group.
const CROSS_SHAPE: (usize, usize) = (1000, 2048);
const CROSS_KS: &[usize] = &[1, 2, 4, 8, 16, 32, 48, 64, 96, 128];

/// From this much work (elements or multiply-adds) a case counts as large: few flat samples.
const LARGE_WORK: usize = 1 << 22;

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

/// `n` floats uniform in `[-1, 1]` from a fixed seed.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn configure<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>, work: usize) {
    g.warm_up_time(Duration::from_millis(500));
    if work >= LARGE_WORK {
        g.sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat);
    } else {
        g.sample_size(20)
            .measurement_time(Duration::from_secs(1))
            .sampling_mode(SamplingMode::Auto);
    }
}

/// Runs `f` in the global pool (`pool == None`) or inside `pool`.
fn in_pool<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

fn one_thread_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
}

fn rank1_group(c: &mut Criterion, pool: Option<&rayon::ThreadPool>, name: &str) {
    let mut g = c.benchmark_group(name);
    for &(rows, cols) in RANK1_SHAPES {
        let n = rows * cols;
        configure(&mut g, n);
        g.throughput(Throughput::Elements(n as u64));
        let x = data(rows, 1);
        let y = data(cols, 2);
        let mut w = data(n, 3);
        for (tier, k) in tiers() {
            // Tiny alpha: W stays bounded however many iterations run.
            g.bench_function(BenchmarkId::new(tier, format!("{rows}x{cols}")), |b| {
                in_pool(pool, || {
                    b.iter(|| {
                        k.rank1_update(
                            1e-9,
                            black_box(&x),
                            black_box(&y),
                            &mut w,
                            MatrixLayout::new(x.len(), cols),
                        )
                        .unwrap()
                    })
                })
            });
        }
    }
    g.finish();
}

/// `w[i] += 1` over the largest rank-1 W: the read-modify-write bandwidth of this machine.
fn rmw_group(c: &mut Criterion, pool: Option<&rayon::ThreadPool>, name: &str) {
    let (rows, cols) = RANK1_SHAPES[RANK1_SHAPES.len() - 1];
    let n = rows * cols;
    let mut w = data(n, 4);
    let mut g = c.benchmark_group(name);
    configure(&mut g, n);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("rmw", format!("{rows}x{cols}")), |b| {
        in_pool(pool, || {
            b.iter(|| {
                black_box(&mut w)
                    .par_chunks_mut(1 << 16)
                    .for_each(|ch| ch.iter_mut().for_each(|v| *v += 1.0))
            })
        })
    });
    g.finish();
}

/// `C += alpha A B` with one plain single-threaded sgemm call on dense row-major operands:
/// `A = delta^T` (`delta` is `[k, m]`), `B = a` (`[k, n]`), `C` is `[m, n]`.
#[allow(clippy::too_many_arguments)]
fn plain_sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    delta: &[f32],
    a: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    assert!(delta.len() >= k * m && a.len() >= k * n && c.len() >= m * n);
    // SAFETY: the assert above: `delta` holds `[k, m]` (read as its transpose: rsa = 1,
    // csa = m), `a` holds `[k, n]`, `c` holds `[m, n]`, a unique borrow distinct from both.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            delta.as_ptr(),
            1,
            m as isize,
            a.as_ptr(),
            n as isize,
            1,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

fn crossover_group(c: &mut Criterion, pool: &rayon::ThreadPool) {
    let (rows, cols) = CROSS_SHAPE;
    let n = rows * cols;
    let mut w = data(n, 5);
    let kmax = *CROSS_KS.iter().max().unwrap();
    let delta = data(kmax * rows, 6);
    let a = data(kmax * cols, 7);
    let lay = MatrixLayout::new(rows, cols);
    let mut g = c.benchmark_group("rank_k_vs_sgemm_1t");
    configure(&mut g, 1);
    g.throughput(Throughput::Elements(n as u64));
    let simd: Vec<_> = tiers()
        .into_iter()
        .filter(|(t, _)| *t != "reference")
        .collect();
    for &k in CROSS_KS {
        let (d, x) = (&delta[..k * rows], &a[..k * cols]);
        for &(tier, kern) in &simd {
            g.bench_function(
                BenchmarkId::new(format!("rank_k/{tier}"), format!("k={k}")),
                |b| {
                    pool.install(|| {
                        b.iter(|| {
                            kern.rank_k_update(1e-9, black_box(d), black_box(x), &mut w, lay)
                                .unwrap()
                        })
                    })
                },
            );
        }
        g.bench_function(BenchmarkId::new("sgemm", format!("k={k}")), |b| {
            b.iter(|| plain_sgemm(rows, k, cols, 1e-9, black_box(d), black_box(x), 1.0, &mut w))
        });
    }
    g.finish();
}

/// `weight_grad` (beta = 0 into dW) or the fused SGD step (beta = 1 on W), best tier.
fn grad_group(c: &mut Criterion, pool: Option<&rayon::ThreadPool>, name: &str, sgd: bool) {
    let k = Kernels::best();
    let tier = k.isa().name();
    let mut g = c.benchmark_group(name);
    for &(b, rows, cols) in GRAD_SHAPES {
        let fmas = b * rows * cols;
        configure(&mut g, fmas);
        g.throughput(Throughput::Elements(2 * fmas as u64));
        let delta = data(b * rows, 8);
        let a = data(b * cols, 9);
        let mut w = data(rows * cols, 10);
        let lay = MatrixLayout::new(rows, cols);
        g.bench_function(BenchmarkId::new(tier, format!("{b}x{rows}x{cols}")), |bn| {
            in_pool(pool, || {
                bn.iter(|| {
                    if sgd {
                        k.sgd_step(1e-9, black_box(&delta), black_box(&a), &mut w, lay, None)
                    } else {
                        k.weight_grad(1.0, black_box(&delta), black_box(&a), 0.0, &mut w, lay)
                    }
                    .unwrap()
                })
            })
        });
    }
    g.finish();
}

/// One plain single-threaded sgemm call the size of the 256x1000x2048 weight gradient.
fn sgemm_plain_group(c: &mut Criterion) {
    let (b, rows, cols) = GRAD_SHAPES[1];
    let delta = data(b * rows, 8);
    let a = data(b * cols, 9);
    let mut w = data(rows * cols, 10);
    let mut g = c.benchmark_group("sgemm_plain_1t");
    configure(&mut g, b * rows * cols);
    g.throughput(Throughput::Elements(2 * (b * rows * cols) as u64));
    g.bench_function(
        BenchmarkId::new("matrixmultiply", format!("{b}x{rows}x{cols}")),
        |bn| {
            bn.iter(|| {
                plain_sgemm(
                    rows,
                    b,
                    cols,
                    1.0,
                    black_box(&delta),
                    black_box(&a),
                    0.0,
                    &mut w,
                )
            })
        },
    );
    g.finish();
}

fn benches(c: &mut Criterion) {
    let one = one_thread_pool();
    rank1_group(c, Some(&one), "rank1_update_1t");
    rank1_group(c, None, "rank1_update");
    rmw_group(c, Some(&one), "rmw_1t");
    rmw_group(c, None, "rmw");
    crossover_group(c, &one);
    sgemm_plain_group(c);
    grad_group(c, Some(&one), "weight_grad_1t", false);
    grad_group(c, None, "weight_grad", false);
    grad_group(c, Some(&one), "sgd_step_1t", true);
    grad_group(c, None, "sgd_step", true);
}

criterion_group!(linear_benches, benches);
criterion_main!(linear_benches);
