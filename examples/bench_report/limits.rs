//! The machine's limits, measured in the same run as the kernels: copy and read bandwidth per
//! memory level, the crate's exp throughput per tier, the FMA peak per tier; each on one
//! thread and on all threads (aggregate, every thread on its own data).
//!
//! A limit is a ceiling: its value is the fastest sample's, and it is measured twice, before
//! and after the kernels (so that a neighbour's load during one pass does not lower it); the
//! higher pass is used. Kernels are reported by their median, so "% of limit" is never
//! flattered by the yardstick.

use std::hint::black_box;

use softmax_kernels::{Isa, Kernels};

use crate::data::AlignedBuf;
use crate::harness::{measure_broadcast, Plan, Timing};
use crate::machine::{Level, Machine};
use crate::prims;
use crate::progress::Progress;
use crate::tier_name;

/// Floats of the L1-resident exp array.
pub const EXP_LEN: usize = 4096;

/// What a limit measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `copy_from_slice` (memcpy), bytes read + written.
    CopyMemcpy,
    /// A copy with plain vector loads and stores, bytes read + written.
    CopySimd,
    /// A vectorized sum, bytes read.
    Read,
    /// `x[i] += c` in place, bytes read + written.
    Rmw,
    /// `Kernels::exp_nonpos` over [`EXP_LEN`] floats, elements.
    Exp,
    /// A register-only FMA loop, flops.
    Fma,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::CopyMemcpy => "copy_memcpy",
            Kind::CopySimd => "copy_simd",
            Kind::Read => "read",
            Kind::Rmw => "rmw",
            Kind::Exp => "exp",
            Kind::Fma => "fma_peak",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Kind::CopyMemcpy | Kind::CopySimd | Kind::Read | Kind::Rmw => "GB/s",
            Kind::Exp => "Gelem/s",
            Kind::Fma => "GFLOP/s",
        }
    }
}

/// One measured limit.
#[derive(Clone, Debug)]
pub struct Limit {
    pub kind: Kind,
    /// The memory level (copy, read).
    pub level: Option<Level>,
    /// The tier (exp, FMA).
    pub tier: Option<Isa>,
    pub threads: usize,
    /// 1: before the kernels, 2: after.
    pub pass: u8,
    /// Bytes each thread touches per call (copy: source + destination).
    pub bytes_per_thread: usize,
    /// Work of one call on every thread together (bytes, elements or flops).
    pub work: f64,
    /// The fastest sample, aggregate over all threads, in [`Kind::unit`].
    pub value: f64,
    /// The median sample, in [`Kind::unit`].
    pub median_value: f64,
    pub timing: Timing,
    /// How it was measured.
    pub note: String,
}

impl Limit {
    /// A short label, e.g. `L3 copy`, `exp avx512`, `FMA avx2`.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::CopyMemcpy | Kind::CopySimd => {
                format!("{} copy", self.level.map_or("?", Level::name))
            }
            Kind::Read => format!("{} read", self.level.map_or("?", Level::name)),
            Kind::Rmw => format!("{} rmw", self.level.map_or("?", Level::name)),
            Kind::Exp => format!("exp {}", self.tier.map_or("?", tier_name)),
            Kind::Fma => format!("FMA {}", self.tier.map_or("?", tier_name)),
        }
    }
}

/// Every measured limit.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub all: Vec<Limit>,
}

impl Limits {
    /// The higher pass of the limit.
    fn find(&self, kind: Kind, threads: usize, pred: impl Fn(&Limit) -> bool) -> Option<&Limit> {
        self.all
            .iter()
            .filter(|l| l.kind == kind && l.threads == threads && pred(l))
            .max_by(|a, b| a.value.total_cmp(&b.value))
    }

    /// The pass-`pass` measurement matching `l`.
    pub fn pass_of(&self, l: &Limit, pass: u8) -> Option<&Limit> {
        self.all.iter().find(|m| {
            m.pass == pass
                && m.kind == l.kind
                && m.threads == l.threads
                && m.level == l.level
                && m.tier == l.tier
        })
    }

    /// The copy bandwidth of `level` on `threads` threads: the better of memcpy and the
    /// plain-store copy (so that no kernel is flattered by a weak yardstick).
    pub fn copy(&self, level: Level, threads: usize) -> Option<&Limit> {
        let a = self.find(Kind::CopyMemcpy, threads, |l| l.level == Some(level));
        let b = self.find(Kind::CopySimd, threads, |l| l.level == Some(level));
        match (a, b) {
            (Some(a), Some(b)) => Some(if a.value >= b.value { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    pub fn read(&self, level: Level, threads: usize) -> Option<&Limit> {
        self.find(Kind::Read, threads, |l| l.level == Some(level))
    }

    pub fn rmw(&self, level: Level, threads: usize) -> Option<&Limit> {
        self.find(Kind::Rmw, threads, |l| l.level == Some(level))
    }

    pub fn exp(&self, tier: Isa, threads: usize) -> Option<&Limit> {
        self.find(Kind::Exp, threads, |l| l.tier == Some(tier))
    }

    pub fn fma(&self, tier: Isa, threads: usize) -> Option<&Limit> {
        self.find(Kind::Fma, threads, |l| l.tier == Some(tier))
    }

    /// The FMA peak of the best tier this CPU runs, on `threads` threads: what
    /// `matrixmultiply`'s sgemm, which picks its micro-kernel at run time, can reach.
    pub fn fma_best(&self, threads: usize) -> Option<&Limit> {
        Isa::ALL
            .into_iter()
            .rev()
            .find_map(|t| self.fma(t, threads))
    }
}

/// The number of limit measurements one [`measure`] pass makes.
pub fn count(tiers: &[Isa], thread_counts: &[usize]) -> usize {
    let fma = tiers
        .iter()
        .filter(|t| prims::fma_peak(t.name()).is_some())
        .count();
    thread_counts.len() * (Level::ALL.len() * 4 + tiers.len() + fma)
}

/// A limit from its timing: `work` per call on all threads together.
#[allow(clippy::too_many_arguments)]
fn limit(
    kind: Kind,
    level: Option<Level>,
    tier: Option<Isa>,
    threads: usize,
    pass: u8,
    bytes_per_thread: usize,
    work: f64,
    timing: Timing,
    note: String,
) -> Limit {
    Limit {
        kind,
        level,
        tier,
        threads,
        pass,
        bytes_per_thread,
        work,
        value: work / timing.min / 1e9,
        median_value: work / timing.median / 1e9,
        timing,
        note,
    }
}

/// Measures every limit on every pool (`(threads, pool)`), as pass `pass`, into `out`.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    out: &mut Limits,
    pass: u8,
    machine: &Machine,
    tiers: &[Isa],
    pools: &[(usize, &rayon::ThreadPool)],
    plan: &Plan,
    quick: bool,
    progress: &Progress,
) {
    let simd = prims::simd_name();
    for &(threads, pool) in pools {
        let mut push = |l: Limit| {
            progress.done(&format!(
                "limit pass {pass} {:<24} {:>2}t  best {:>8} {:<7} median {:>8} ±{:.0}%",
                l.label()
                    + if l.kind == Kind::CopyMemcpy {
                        " (memcpy)"
                    } else {
                        ""
                    },
                l.threads,
                crate::report::fmt_num(l.value),
                l.kind.unit(),
                crate::report::fmt_num(l.median_value),
                100.0 * l.timing.spread(),
            ));
            out.all.push(l);
        };
        for level in Level::ALL {
            let bytes = machine.probe_bytes(level, threads, quick);
            for kind in [Kind::CopyMemcpy, Kind::CopySimd] {
                let floats = bytes / 4 / 2;
                let t = measure_broadcast(
                    pool,
                    plan,
                    |i, _| {
                        (
                            AlignedBuf::uniform(floats, -1.0, 1.0, i as u64),
                            AlignedBuf::zeros(floats),
                        )
                    },
                    |(src, dst)| {
                        if kind == Kind::CopyMemcpy {
                            prims::copy_memcpy(black_box(src), black_box(dst));
                        } else {
                            prims::copy_simd(black_box(src), black_box(dst));
                        }
                    },
                );
                push(limit(
                    kind,
                    Some(level),
                    None,
                    threads,
                    pass,
                    floats * 8,
                    (floats * 8 * threads) as f64,
                    t,
                    format!(
                        "{} x {} KiB -> {} KiB per thread, read + write bytes",
                        if kind == Kind::CopyMemcpy {
                            "memcpy".to_string()
                        } else {
                            format!("{simd} loads/stores")
                        },
                        (floats * 4) >> 10,
                        (floats * 4) >> 10
                    ),
                ));
            }
            let floats = bytes / 4;
            let t = measure_broadcast(
                pool,
                plan,
                |i, _| AlignedBuf::uniform(floats, -1.0, 1.0, i as u64),
                |x| {
                    black_box(prims::read_sum(black_box(x)));
                },
            );
            push(limit(
                Kind::Read,
                Some(level),
                None,
                threads,
                pass,
                floats * 4,
                (floats * 4 * threads) as f64,
                t,
                format!("{simd} sum of {} KiB per thread", (floats * 4) >> 10),
            ));
            let t = measure_broadcast(
                pool,
                plan,
                |i, _| AlignedBuf::uniform(floats, -1.0, 1.0, i as u64),
                |x| prims::rmw_add(black_box(x), black_box(0.0)),
            );
            push(limit(
                Kind::Rmw,
                Some(level),
                None,
                threads,
                pass,
                floats * 4,
                (floats * 8 * threads) as f64,
                t,
                format!(
                    "{simd} x[i] += c over {} KiB per thread, read + write bytes",
                    (floats * 4) >> 10
                ),
            ));
        }
        for &tier in tiers {
            let k = Kernels::for_isa(tier).expect("listed as available");
            let t = measure_broadcast(
                pool,
                plan,
                |i, _| {
                    (
                        AlignedBuf::uniform(EXP_LEN, -10.0, 0.0, 7 + i as u64),
                        AlignedBuf::zeros(EXP_LEN),
                    )
                },
                |(x, y)| k.exp_nonpos(black_box(x), black_box(y)).unwrap(),
            );
            push(limit(
                Kind::Exp,
                Some(Level::L1),
                Some(tier),
                threads,
                pass,
                EXP_LEN * 8,
                (EXP_LEN * threads) as f64,
                t,
                format!("Kernels::exp_nonpos, {EXP_LEN} floats in [-10, 0]"),
            ));
        }
        for &tier in tiers {
            let Some((lanes, f)) = prims::fma_peak(tier.name()) else {
                continue;
            };
            let t = measure_broadcast(
                pool,
                plan,
                |_, _| (),
                |_| {
                    black_box(f());
                },
            );
            push(limit(
                Kind::Fma,
                None,
                Some(tier),
                threads,
                pass,
                0,
                prims::fma_flops_per_call(lanes) * threads as f64,
                t,
                if tier == Isa::Portable {
                    format!(
                        "{} accumulators x {lanes} lanes (SSE2 on x86-64) of a * b + c, \
                         separate mul + add, compiler-vectorized",
                        prims::FMA_ACCS
                    )
                } else {
                    format!(
                        "{} accumulators x {lanes} lanes of fmadd, register only",
                        prims::FMA_ACCS
                    )
                },
            ));
        }
    }
}
