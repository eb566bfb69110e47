//! Criterion benches of the fused linear cross-entropy (`softmax_kernels::linear_ce`) against
//! the same work done by the crate's separate kernels.
//!
//! One group, `linear_ce`, on the best tier (`Kernels::best()`); ids are `METHOD_Nt/BxCxD`,
//! where `N` is the number of threads of the rayon pool the case runs in
//! (`rayon::current_num_threads()` inside it): every case runs once inside a one-thread pool
//! (`_1t`) and once in the global pool (all threads, e.g. `_2t`; skipped when that is one
//! thread too), so the one-thread / all-threads ratio comes from one run. Methods:
//!
//! * `fused`: `Kernels::linear_cross_entropy` with automatic chunking (16 MiB of logits at a
//!   time; class blocks for `C = 128256`, whole rows otherwise), computing the mean loss
//!   against class labels and `dA`, `dW`, `db`.
//! * `unfused`: the same loss and gradients from the crate's own kernels: `linear_forward` into
//!   a `[B, C]` buffer, `cross_entropy_fwd_bwd_inplace` (the gradient over the logits),
//!   `linear_backward_input` (`dA`), `weight_grad(1.0, G, A, 0.0, dW)`,
//!   `bias_grad(1.0, G, 0.0, db)`. The `[B, C]` buffer is allocated once, outside the timing
//!   loop, and reused by every iteration: this favours `unfused` (no page faults on a buffer of
//!   up to 500 MiB per call, as a training loop that keeps the buffer would also avoid), and
//!   hides its memory cost; see `examples/linear_ce_memory.rs` for peak memory.
//! * `fused_rows64`, `fused_classes2048` (the 1024x128256x256 shape only): the fused call with
//!   explicit chunking, whole rows 64 at a time (`chunk_rows(64)`, 32 MiB of logits) and class
//!   blocks of 2048 classes over the whole batch (`chunk_classes(2048)`, 8 MiB).
//!
//! Shapes `(B, C, D)`: 256x1000x128 (small), 512x32000x1024 and 1024x128256x256 (LM heads,
//! about 1-4 s per call on one thread: 10 flat samples each, and criterion warns that it cannot
//! finish them in the target time, which is expected). `Throughput::Elements(B * C * D)`: the
//! multiply-adds of one of the GEMMs (the unfused method and whole-row chunks do three such
//! GEMMs, class blocks four), so "elem/s" compares methods on equal work.
//!
//! Inputs are fixed-seed: activations uniform in `[-1, 1]`, weights and bias uniform in
//! `[-0.05, 0.05]`, labels uniform over the classes. Before timing, the small shape checks that
//! fused and unfused agree (loss within 1e-4 relative, gradients within a small tolerance).
//!
//! The whole run takes several minutes on 2 cores (the large shapes dominate). Run a subset
//! with a filter, e.g. `cargo bench --bench linear_ce -- 256x1000x128` or
//! `cargo bench --bench linear_ce -- 'fused_1t/'`; `-- --quick` shortens small cases.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use softmax_kernels::{
    CrossEntropyOptions, Kernels, LinearCeOptions, LinearCeOutputs, MatrixLayout, Targets,
};

/// Shapes `(B, C, D)`: small, a 32k vocabulary with a wide hidden size, a 128k vocabulary.
const SHAPES: &[(usize, usize, usize)] =
    &[(256, 1000, 128), (512, 32000, 1024), (1024, 128_256, 256)];

/// The shape that also runs the fused call with explicit chunkings.
const CHUNKING_SHAPE: (usize, usize, usize) = (1024, 128_256, 256);

/// From this many multiply-adds a case counts as large: 10 flat samples.
const LARGE_WORK: usize = 1 << 26;

/// The inputs of one shape and the outputs both methods write.
struct Problem {
    b: usize,
    c: usize,
    d: usize,
    a: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    labels: Vec<i64>,
    da: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

impl Problem {
    fn new((b, c, d): (usize, usize, usize)) -> Problem {
        let mut rng = StdRng::seed_from_u64(0x11CE ^ ((b * 31 + c) * 31 + d) as u64);
        let a = (0..b * d).map(|_| rng.gen_range(-1.0f32..=1.0)).collect();
        let w = (0..c * d).map(|_| rng.gen_range(-0.05f32..=0.05)).collect();
        let bias = (0..c).map(|_| rng.gen_range(-0.05f32..=0.05)).collect();
        let labels = (0..b).map(|_| rng.gen_range(0..c as i64)).collect();
        Problem {
            b,
            c,
            d,
            a,
            w,
            bias,
            labels,
            da: vec![0.0; b * d],
            dw: vec![0.0; c * d],
            db: vec![0.0; c],
        }
    }

    fn layout(&self) -> MatrixLayout {
        MatrixLayout::new(self.c, self.d)
    }

    fn label(&self) -> String {
        format!("{}x{}x{}", self.b, self.c, self.d)
    }

    /// The fused call (mean loss, class labels, `dA`, `dW`, `db`).
    fn fused(&mut self, k: &Kernels, opts: &LinearCeOptions<'_>) -> f32 {
        let layout = self.layout();
        let mut out = LinearCeOutputs {
            da: Some(&mut self.da),
            dw: Some(&mut self.dw),
            db: Some(&mut self.db),
            ..Default::default()
        };
        k.linear_cross_entropy(
            black_box(&self.a),
            black_box(&self.w),
            layout,
            Some(black_box(&self.bias)),
            Targets::Classes(black_box(&self.labels)),
            opts,
            &mut out,
        )
        .unwrap()
        .loss
    }

    /// The unfused composition, with the `[B, C]` logits in `z` (allocated by the caller).
    fn unfused(&mut self, k: &Kernels, z: &mut [f32]) -> f32 {
        let layout = self.layout();
        let (a, w) = (black_box(&self.a[..]), black_box(&self.w[..]));
        k.linear_forward(a, w, layout, Some(black_box(&self.bias)), z)
            .unwrap();
        let loss = k
            .cross_entropy_fwd_bwd_inplace(
                z,
                black_box(&self.labels),
                self.c,
                &CrossEntropyOptions::default(),
            )
            .unwrap();
        k.linear_backward_input(z, w, layout, &mut self.da).unwrap();
        k.weight_grad(1.0, z, a, 0.0, &mut self.dw, layout).unwrap();
        k.bias_grad(1.0, z, 0.0, &mut self.db).unwrap();
        loss
    }
}

fn configure<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>, work: usize) {
    if work >= LARGE_WORK {
        // A second or more per call: 10 flat samples, whatever the target time says.
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat);
    } else {
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(500))
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

/// Largest `|x - y|` over two slices.
fn max_abs_diff(x: &[f32], y: &[f32]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

/// Checks on the small shape that the fused and unfused methods compute the same thing, so the
/// benches compare equal work.
fn sanity_check(k: &Kernels) {
    let mut p = Problem::new(SHAPES[0]);
    let mut z = vec![0.0f32; p.b * p.c];
    let lu = p.unfused(k, &mut z);
    let (da, dw, db) = (p.da.clone(), p.dw.clone(), p.db.clone());
    for opts in [
        LinearCeOptions::default(),
        LinearCeOptions::default().chunk_rows(64),
        LinearCeOptions::default().chunk_classes(256),
    ] {
        let lf = p.fused(k, &opts);
        let diffs = [
            max_abs_diff(&da, &p.da),
            max_abs_diff(&dw, &p.dw),
            max_abs_diff(&db, &p.db),
        ];
        assert!(
            (lf - lu).abs() <= 1e-4 * lu.abs() && diffs.iter().all(|&e| e <= 1e-5),
            "fused ({opts:?}) loss {lf}, unfused {lu}; max |diff| of dA, dW, db: {diffs:?}"
        );
    }
}

/// Every case of one shape, in `pool` (or the global pool).
fn shape_cases(
    g: &mut BenchmarkGroup<'_, WallTime>,
    k: &Kernels,
    p: &mut Problem,
    z: &mut [f32],
    pool: Option<&rayon::ThreadPool>,
) {
    let threads = in_pool(pool, rayon::current_num_threads);
    let shape = p.label();
    let mut cases = vec![("fused", LinearCeOptions::default())];
    if (p.b, p.c, p.d) == CHUNKING_SHAPE {
        cases.push(("fused_rows64", LinearCeOptions::default().chunk_rows(64)));
        cases.push((
            "fused_classes2048",
            LinearCeOptions::default().chunk_classes(2048),
        ));
    }
    for (name, opts) in &cases {
        g.bench_function(
            BenchmarkId::new(format!("{name}_{threads}t"), &shape),
            |bn| in_pool(pool, || bn.iter(|| p.fused(k, opts))),
        );
    }
    g.bench_function(
        BenchmarkId::new(format!("unfused_{threads}t"), &shape),
        |bn| in_pool(pool, || bn.iter(|| p.unfused(k, black_box(&mut *z)))),
    );
}

fn benches(c: &mut Criterion) {
    let k = Kernels::best();
    sanity_check(k);
    let one = one_thread_pool();
    let all_threads = rayon::current_num_threads();
    let mut g = c.benchmark_group("linear_ce");
    for &shape in SHAPES {
        let (b, cl, d) = shape;
        let work = b * cl * d;
        configure(&mut g, work);
        g.throughput(Throughput::Elements(work as u64));
        let mut p = Problem::new(shape);
        // The unfused method's logits: allocated (and touched) once, outside the timing loop.
        let mut z = vec![1.0f32; b * cl];
        shape_cases(&mut g, k, &mut p, &mut z, Some(&one));
        if all_threads > 1 {
            shape_cases(&mut g, k, &mut p, &mut z, None);
        }
    }
    g.finish();
}

criterion_group!(linear_ce_benches, benches);
criterion_main!(linear_ce_benches);
