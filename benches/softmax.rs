//! Criterion benches of the softmax family on every tier this CPU runs.
//!
//! Groups (ids are `tier/ROWSxCOLS`; the scalar tier is the f64 oracle and is named
//! `reference`):
//!
//! * `softmax`, `log_softmax`, `logsumexp`: in the global rayon pool (all threads);
//!   `Throughput::Elements(rows * cols)`. The reference skips the largest shapes.
//! * `softmax_1t`: softmax of the large shapes inside a one-thread rayon pool, so the
//!   one-thread / all-threads ratio can be read from one run.
//! * `exp`: each tier's `exp_nonpos` over 4096 L1-resident floats.
//! * `copy`: `y.copy_from_slice(x)` over the bytes of a 256x1000 and a 4096x32000 softmax, as
//!   `Throughput::Bytes(2 * 4 * n)` (read plus write), the memory-bandwidth yardstick.
//!
//! Inputs are logits uniform in `[-5, 5]` from a fixed seed. Run all with
//! `cargo bench --bench softmax`, one tier with a filter (`cargo bench --bench softmax --
//! softmax/avx512`), or a fast pass with `-- --quick`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use softmax_kernels::{Isa, Kernels};

/// Shapes of the `softmax` group: tiny rows, mid-size batches, LM vocabularies (32000, 128256).
const SOFTMAX_SHAPES: &[(usize, usize)] = &[
    (1, 10),
    (64, 10),
    (256, 1000),
    (1024, 1000),
    (32, 32000),
    (8, 128_256),
    (512, 32000),
    (4096, 32000),
];

/// Shapes of the `log_softmax` and `logsumexp` groups.
const LOG_SHAPES: &[(usize, usize)] =
    &[(1, 10), (64, 10), (256, 1000), (4096, 32000), (8, 128_256)];

/// Shapes of the one-thread group.
const ONE_THREAD_SHAPES: &[(usize, usize)] =
    &[(256, 1000), (1024, 1000), (4096, 32000), (8, 128_256)];

/// The reference tier computes in f64 and is only benched up to this many elements.
const REFERENCE_MAX_ELEMS: usize = 4 << 20;

/// From this many elements a shape counts as large: fewer, flat samples.
const LARGE_ELEMS: usize = 1 << 20;

/// Floats of the `exp` group's L1-resident array.
const EXP_LEN: usize = 4096;

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

/// `n` logits uniform in `[-5, 5]`, always the same.
fn logits(n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(0x5EED_50F7);
    (0..n).map(|_| rng.gen_range(-5.0f32..=5.0)).collect()
}

fn label((rows, cols): (usize, usize)) -> String {
    format!("{rows}x{cols}")
}

/// Sample settings by size: small shapes take many cheap samples, large ones (tens to hundreds
/// of milliseconds per call) a few flat ones.
fn configure<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>, elems: usize) {
    g.warm_up_time(Duration::from_secs(1));
    if elems >= LARGE_ELEMS {
        g.sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .sampling_mode(SamplingMode::Flat);
    } else {
        g.sample_size(20)
            .measurement_time(Duration::from_millis(1500))
            .sampling_mode(SamplingMode::Auto);
    }
}

/// What a forward group computes: `(kernels, x, out, cols)`.
type Op = fn(&Kernels, &[f32], &mut [f32], usize);

fn op_softmax(k: &Kernels, x: &[f32], y: &mut [f32], cols: usize) {
    k.softmax(x, y, cols).unwrap();
}

fn op_log_softmax(k: &Kernels, x: &[f32], y: &mut [f32], cols: usize) {
    k.log_softmax(x, y, cols).unwrap();
}

fn op_logsumexp(k: &Kernels, x: &[f32], out: &mut [f32], cols: usize) {
    k.logsumexp(x, out, cols).unwrap();
}

/// One forward group over `shapes` on every tier, in the global rayon pool. `out_per_row`
/// gives the output length of a row (`cols`, or 1 for logsumexp).
fn forward_group(
    c: &mut Criterion,
    name: &str,
    op: Op,
    shapes: &[(usize, usize)],
    out_per_row: fn(usize) -> usize,
    x: &[f32],
    y: &mut [f32],
) {
    let tiers = tiers();
    let mut g = c.benchmark_group(name);
    for &(rows, cols) in shapes {
        let n = rows * cols;
        configure(&mut g, n);
        g.throughput(Throughput::Elements(n as u64));
        let (xs, ys) = (&x[..n], &mut y[..rows * out_per_row(cols)]);
        for &(tier, k) in &tiers {
            if tier == "reference" && n > REFERENCE_MAX_ELEMS {
                continue;
            }
            g.bench_function(BenchmarkId::new(tier, label((rows, cols))), |b| {
                b.iter(|| op(k, black_box(xs), black_box(&mut *ys), cols))
            });
        }
    }
    g.finish();
}

/// Softmax of the large shapes in a one-thread pool, for every SIMD tier.
fn softmax_one_thread(c: &mut Criterion, x: &[f32], y: &mut [f32]) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let mut g = c.benchmark_group("softmax_1t");
    for &(rows, cols) in ONE_THREAD_SHAPES {
        let n = rows * cols;
        configure(&mut g, n);
        g.throughput(Throughput::Elements(n as u64));
        let (xs, ys) = (&x[..n], &mut y[..n]);
        for (tier, k) in tiers() {
            if tier == "reference" {
                continue;
            }
            g.bench_function(BenchmarkId::new(tier, label((rows, cols))), |b| {
                pool.install(|| {
                    b.iter(|| k.softmax(black_box(xs), black_box(&mut *ys), cols).unwrap())
                })
            });
        }
    }
    g.finish();
}

/// Each tier's `exp_nonpos` over an L1-resident array of `x - max`-like arguments.
fn exp_group(c: &mut Criterion, x: &[f32]) {
    let xs: Vec<f32> = x[..EXP_LEN].iter().map(|v| v - 5.0).collect();
    let mut ys = vec![0.0f32; EXP_LEN];
    let mut g = c.benchmark_group("exp");
    configure(&mut g, EXP_LEN);
    g.throughput(Throughput::Elements(EXP_LEN as u64));
    for (tier, k) in tiers() {
        g.bench_function(BenchmarkId::new(tier, EXP_LEN), |b| {
            b.iter(|| k.exp_nonpos(black_box(&xs), black_box(&mut ys)).unwrap())
        });
    }
    g.finish();
}

/// `y.copy_from_slice(x)` over the sizes of two softmax shapes: read plus write bandwidth.
fn copy_group(c: &mut Criterion, x: &[f32], y: &mut [f32]) {
    let mut g = c.benchmark_group("copy");
    for shape in [(256, 1000), (4096, 32000)] {
        let n = shape.0 * shape.1;
        configure(&mut g, n);
        g.throughput(Throughput::Bytes(2 * 4 * n as u64));
        let (xs, ys) = (&x[..n], &mut y[..n]);
        g.bench_function(BenchmarkId::new("copy", label(shape)), |b| {
            b.iter(|| black_box(&mut *ys).copy_from_slice(black_box(xs)))
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let max = SOFTMAX_SHAPES
        .iter()
        .map(|&(r, k)| r * k)
        .max()
        .unwrap_or(0);
    let x = logits(max);
    let mut y = vec![0.0f32; max];
    forward_group(
        c,
        "softmax",
        op_softmax,
        SOFTMAX_SHAPES,
        |cols| cols,
        &x,
        &mut y,
    );
    softmax_one_thread(c, &x, &mut y);
    forward_group(
        c,
        "log_softmax",
        op_log_softmax,
        LOG_SHAPES,
        |cols| cols,
        &x,
        &mut y,
    );
    forward_group(c, "logsumexp", op_logsumexp, LOG_SHAPES, |_| 1, &x, &mut y);
    exp_group(c, &x);
    copy_group(c, &x, &mut y);
}

criterion_group!(softmax_benches, benches);
criterion_main!(softmax_benches);
