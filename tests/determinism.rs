//! Results are bit-identical for any number of threads: every function of every tier, run in
//! rayon pools of 1, 2, 3 and 8 threads (and in the global pool), on shapes that take the
//! inline path (1x10, 64x10), the row-block path (2000x10, 5000x5, 2000x40, 256x1000,
//! 1024x1000), the split long-row path
//! (3x69633, fewer rows than threads for the larger pools) and the row-parallel long-row path
//! (8x128256).

mod common;

use common::ok;
use common::oracle as o;
use rayon::ThreadPool;
use softmax_kernels::{Kernels, MaskedRows, SoftmaxOptions};

const SHAPES: [(usize, usize); 9] = [
    (1, 10),
    (64, 10),
    // Very short rows in parallel row blocks of 1638 and 3276 rows (64 KiB of input each;
    // not multiples of any vector width), so that rows one thread computes in a group of rows
    // fall at a block edge with several threads.
    (2000, 10),
    (5000, 5),
    // Short rows in parallel row blocks of an odd number of rows (409), so the two-row
    // interleaving of the short-row softmax pairs rows differently in each block.
    (2000, 40),
    (256, 1000),
    (1024, 1000),
    (8, 128256),
    (3, 69633),
];
const THREADS: [usize; 4] = [1, 2, 3, 8];

/// Every output of every function for one input, in a fixed order.
fn all_outputs(k: &Kernels, x: &[f32], dy: &[f32], cols: usize) -> Vec<(&'static str, Vec<f32>)> {
    let n = x.len();
    let zero = SoftmaxOptions::default().masked_rows(MaskedRows::Zero);
    let mut out = Vec::new();

    let mut p = vec![0.0f32; n];
    k.softmax(x, &mut p, cols).unwrap();
    let mut v = x.to_vec();
    k.softmax_inplace(&mut v, cols).unwrap();
    out.push(("softmax_inplace", v));
    let mut v = vec![0.0f32; n];
    k.softmax_with(x, &mut v, cols, zero).unwrap();
    out.push(("softmax_with(Zero)", v));

    let mut l = vec![0.0f32; n];
    k.log_softmax(x, &mut l, cols).unwrap();
    let mut v = x.to_vec();
    k.log_softmax_inplace(&mut v, cols).unwrap();
    out.push(("log_softmax_inplace", v));
    let mut v = x.to_vec();
    k.log_softmax_inplace_with(&mut v, cols, zero).unwrap();
    out.push(("log_softmax_inplace_with(Zero)", v));

    let mut s = vec![0.0f32; n / cols];
    k.logsumexp(x, &mut s, cols).unwrap();
    out.push(("logsumexp", s));

    let mut v = vec![0.0f32; n];
    k.softmax_backward(&p, dy, &mut v, cols).unwrap();
    out.push(("softmax_backward", v));
    let mut v = vec![0.0f32; n];
    k.log_softmax_backward(&l, dy, &mut v, cols).unwrap();
    out.push(("log_softmax_backward", v));

    out.push(("softmax", p));
    out.push(("log_softmax", l));
    out
}

fn pools() -> Vec<(usize, ThreadPool)> {
    THREADS
        .iter()
        .map(|&n| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("build a rayon pool");
            assert_eq!(pool.current_num_threads(), n);
            (n, pool)
        })
        .collect()
}

fn input(rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = common::rng((rows * 1_000_003 + cols) as u64);
    let mut x = common::logits(&mut rng, rows * cols, 15.0);
    // A fully masked stretch in the last row (when there are several): whole online chunks (and, for short rows, the
    // whole row) of -inf, so the masked-row and masked-chunk paths are covered too.
    if rows > 1 {
        let last = (rows - 1) * cols;
        let masked = if cols > 10_000 { 3 * 4096 } else { cols };
        x[last..last + masked].fill(f32::NEG_INFINITY);
    }
    let dy = common::logits(&mut rng, rows * cols, 1.0);
    (x, dy)
}

/// Compares every output for 2, 3 and 8 threads and the global pool with 1 thread; returns the
/// failures (all of them, so one run shows every shape and tier affected).
fn check_shape(
    k: &Kernels,
    pools: &[(usize, ThreadPool)],
    rows: usize,
    cols: usize,
) -> Vec<String> {
    let (x, dy) = input(rows, cols);
    let base = pools[0].1.install(|| all_outputs(k, &x, &dy, cols));
    let global = all_outputs(k, &x, &dy, cols);
    let others = pools[1..]
        .iter()
        .map(|(n, pool)| {
            (
                format!("{n} threads"),
                pool.install(|| all_outputs(k, &x, &dy, cols)),
            )
        })
        .chain(std::iter::once(("the global pool".to_string(), global)));
    let mut failures = Vec::new();
    for (label, got) in others {
        for ((name, a), (_, b)) in base.iter().zip(&got) {
            if let Err(e) = o::check_bits("thread count changed the result", a, b) {
                failures.push(format!(
                    "tier {}, {rows}x{cols}, {name}: 1 thread vs {label}\n{e}",
                    k.isa()
                ));
            }
        }
    }
    failures
}

fn check_shapes(filter: impl Fn(usize) -> bool) {
    let pools = pools();
    let mut failures = Vec::new();
    for k in common::tiers() {
        for &(rows, cols) in SHAPES.iter().filter(|s| filter(s.1)) {
            failures.extend(check_shape(k, &pools, rows, cols));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn bit_identical_for_any_thread_count_short_and_medium_rows() {
    check_shapes(|cols| cols < 10_000);
}

#[test]
fn bit_identical_for_any_thread_count_long_rows() {
    check_shapes(|cols| cols >= 10_000);
}

/// The free functions too (they run the active tier in the caller's pool).
#[test]
fn free_functions_bit_identical_for_any_thread_count() {
    if softmax_kernels::Kernels::active().is_err() {
        eprintln!("skipping: SOFTMAX_KERNELS_ISA is invalid in this environment");
        return;
    }
    let pools = pools();
    for (rows, cols) in [(1024usize, 1000usize), (2, 128256)] {
        let (x, _) = input(rows, cols);
        let run = || {
            let mut p = vec![0.0f32; x.len()];
            softmax_kernels::softmax(&x, &mut p, cols).unwrap();
            let mut s = vec![0.0f32; rows];
            softmax_kernels::logsumexp(&x, &mut s, cols).unwrap();
            (p, s)
        };
        let (p0, s0) = pools[0].1.install(run);
        for (n, pool) in &pools[1..] {
            let (p, s) = pool.install(run);
            ok(
                format!("free softmax {rows}x{cols}, {n} threads"),
                o::check_bits("softmax", &p0, &p),
            );
            ok(
                format!("free logsumexp {rows}x{cols}, {n} threads"),
                o::check_bits("logsumexp", &s0, &s),
            );
        }
    }
}
