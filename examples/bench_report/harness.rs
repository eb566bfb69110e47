//! Timing: warm-up, then repeated samples of a calibrated number of calls; medians and spread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// How long to warm up and sample.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Warm-up time (at least one call).
    pub warmup: Duration,
    /// Target length of one sample (calls are batched up to it).
    pub sample: Duration,
    /// Samples taken, unless the budget cuts them.
    pub samples: usize,
    /// Time budget for the samples of one measurement (never fewer than [`MIN_SAMPLES`]).
    pub budget: Duration,
}

/// The fewest samples of any measurement.
pub const MIN_SAMPLES: usize = 3;

impl Plan {
    /// `--quick`: short warm-up, 1 ms samples.
    pub fn quick() -> Plan {
        Plan {
            warmup: Duration::from_millis(10),
            sample: Duration::from_millis(1),
            samples: 5,
            budget: Duration::from_millis(40),
        }
    }

    /// The full run.
    pub fn full() -> Plan {
        Plan {
            warmup: Duration::from_millis(150),
            sample: Duration::from_millis(10),
            samples: 15,
            budget: Duration::from_millis(1500),
        }
    }

    /// Calls per sample and the number of samples for a call of `per_call` seconds.
    fn shape(&self, per_call: f64) -> (u64, usize) {
        let per_call = per_call.max(1e-9);
        let iters = (self.sample.as_secs_f64() / per_call).ceil().max(1.0) as u64;
        let sample_s = iters as f64 * per_call;
        let fit = (self.budget.as_secs_f64() / sample_s).floor() as usize;
        (iters, fit.clamp(MIN_SAMPLES, self.samples.max(MIN_SAMPLES)))
    }
}

/// Seconds per call: the median over samples, and the fastest and slowest sample.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Median seconds per call.
    pub median: f64,
    /// Fastest sample, seconds per call.
    pub min: f64,
    /// Slowest sample, seconds per call.
    pub max: f64,
    /// Number of samples.
    pub samples: usize,
    /// Calls per sample.
    pub iters: u64,
}

impl Timing {
    fn from_samples(mut per_call: Vec<f64>, iters: u64) -> Timing {
        per_call.sort_by(f64::total_cmp);
        let n = per_call.len();
        let median = if n % 2 == 1 {
            per_call[n / 2]
        } else {
            0.5 * (per_call[n / 2 - 1] + per_call[n / 2])
        };
        Timing {
            median,
            min: per_call[0],
            max: per_call[n - 1],
            samples: n,
            iters,
        }
    }

    /// The noise, as a fraction: every sample's throughput (work / seconds per call) lies
    /// within `±spread` of the median's throughput (the min-max spread of the samples).
    pub fn spread(&self) -> f64 {
        if self.min > 0.0 && self.max > 0.0 {
            (self.median / self.min - 1.0).max(1.0 - self.median / self.max)
        } else {
            0.0
        }
    }
}

/// Times `f` on the calling thread: warm-up, calibration, then samples of `iters` calls.
pub fn measure(plan: &Plan, mut f: impl FnMut()) -> Timing {
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        f();
        calls += 1;
        if start.elapsed() >= plan.warmup {
            break;
        }
    }
    let (iters, n) = plan.shape(start.elapsed().as_secs_f64() / calls as f64);
    let mut per_call = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        per_call.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    Timing::from_samples(per_call, iters)
}

/// Times `work` on every thread of `pool` at once, each thread on its own state from
/// `setup(thread_index, threads)` (allocated and first touched by that thread). Samples start
/// together behind a barrier and end when the slowest thread is done, so the result is the
/// wall time of one call on every thread: aggregate throughput = threads * work per call /
/// median.
pub fn measure_broadcast<S>(
    pool: &rayon::ThreadPool,
    plan: &Plan,
    setup: impl Fn(usize, usize) -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) -> Timing {
    let threads = pool.current_num_threads();
    let barrier = Barrier::new(threads);
    let iters_shared = AtomicU64::new(1);
    let samples_shared = AtomicU64::new(MIN_SAMPLES as u64);
    let mut results = pool.broadcast(|ctx| {
        let idx = ctx.index();
        let mut state = setup(idx, threads);
        barrier.wait();
        // Warm-up together; thread 0 calibrates for everyone.
        let start = Instant::now();
        let mut calls = 0u64;
        loop {
            work(&mut state);
            calls += 1;
            if start.elapsed() >= plan.warmup {
                break;
            }
        }
        if idx == 0 {
            let (iters, n) = plan.shape(start.elapsed().as_secs_f64() / calls as f64);
            iters_shared.store(iters, Ordering::Relaxed);
            samples_shared.store(n as u64, Ordering::Relaxed);
        }
        barrier.wait();
        let iters = iters_shared.load(Ordering::Relaxed);
        let n = samples_shared.load(Ordering::Relaxed) as usize;
        let mut per_call = Vec::with_capacity(n);
        for _ in 0..n {
            barrier.wait();
            let t = Instant::now();
            for _ in 0..iters {
                work(&mut state);
            }
            barrier.wait();
            per_call.push(t.elapsed().as_secs_f64() / iters as f64);
        }
        (idx, per_call, iters)
    });
    results.sort_by_key(|r| r.0);
    let (_, per_call, iters) = results.swap_remove(0);
    Timing::from_samples(per_call, iters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let t = Timing::from_samples(vec![3.0, 1.0, 2.0, 2.2, 1.9], 1);
        assert_eq!(t.median, 2.0);
        assert_eq!((t.min, t.max), (1.0, 3.0));
        // Throughput: the fastest sample is 2x the median's, the slowest 2/3 of it.
        assert!((t.spread() - 1.0).abs() < 1e-12);
        let u = Timing::from_samples(vec![1.0, 1.1, 0.95], 1);
        // The slowest sample has 1/1.1 of the median throughput: -9.1%.
        assert!((u.spread() - (1.0 - 1.0 / 1.1)).abs() < 1e-12);
        let e = Timing::from_samples(vec![1.0, 3.0], 1);
        assert_eq!(e.median, 2.0);
    }

    #[test]
    fn plan_shape() {
        let p = Plan::full();
        let (iters, n) = p.shape(1e-6);
        assert_eq!(iters, 10_000);
        assert_eq!(n, 15);
        // A 2 s call: one call per sample, the minimum number of samples.
        assert_eq!(p.shape(2.0), (1, MIN_SAMPLES));
    }
}
