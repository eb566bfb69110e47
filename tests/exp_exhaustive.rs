//! Accuracy of the vectorized exp of every SIMD tier against the correctly rounded reference
//! `((x as f64).exp()) as f32`.
//!
//! * `exp_nonpos_exhaustive` (ignored; run it with
//!   `cargo test --release --test exp_exhaustive -- --ignored --nocapture`) evaluates
//!   `Kernels::exp_nonpos` and `Kernels::exp` on **every** f32 of `[-104, 0]` (both zeros
//!   included), `Kernels::exp` on every f32 of `[0, 88.73]` and `Kernels::exp_nonpos` on every
//!   f32 of `[0, 64]`, and checks the tails (every f32
//!   below `-104` and above `88.73`, infinities included) and every NaN bit pattern.
//! * `exp_sampled` runs the same checks on about a million strided samples of the same ranges,
//!   plus the bit patterns around each boundary, so a plain `cargo test` exercises them.
//! * `exp_special_values` checks `-inf`, `+inf`, NaN and both zeros at every position of short
//!   slices (vector body and masked tail).
//!
//! The contract checked, for every tier but `Scalar` (whose exp is the reference itself):
//!
//! | x                               | `exp_nonpos`           | `exp`                    |
//! |---------------------------------|------------------------|--------------------------|
//! | `[-87.33654, 0]` (normal exp)   | <= 2 ULP               | <= 2 ULP                 |
//! | `[-104, -87.33654)` (subnormal) | exactly 0 or <= 2 ULP  | exactly 0 or <= 2 ULP    |
//! | below `-104`, `-inf`            | `+0.0`                 | `+0.0`                   |
//! | `[0, 64]`                       | <= 2 ULP               | <= 2 ULP                 |
//! | `(64, 88.72]`                   | (not checked)          | <= 2 ULP                 |
//! | `(88.72, 88.73]`                | (not checked)          | `+inf` iff the reference overflows, else <= 2 ULP |
//! | above `88.73`, `+inf`           | (not checked)          | `+inf`                   |
//! | NaN (every payload, both signs) | NaN                    | NaN                      |
//!
//! `exp_nonpos` on `[0, 64]`: the short-row kernels evaluate `exp(z)` unshifted (no row
//! maximum) when the row's sum lands in `[2^-26, 2^60]`, so every such `z` is below 41.6; the
//! checked range goes past that, so that a clamped argument (64) can only make the sum too
//! large, never pass with a wrong value.
//!
//! The ULP distance of two non-negative floats is the difference of their bit patterns (this
//! counts subnormal ULPs too, and treats `+0.0` as the float below the smallest subnormal).

use std::fmt::Write as _;
use std::time::Instant;

use rayon::prelude::*;
use softmax_kernels::{Isa, Kernels};

/// Floats per batch (one rayon task).
const BATCH: usize = 64 * 1024;

/// `-0x1.5D589Ep6 = -87.33654022216797`: the smallest f32 whose exp is a normal f32
/// (`ln 2^-126 = -87.3365447...`).
const NORMAL_MIN: f32 = f32::from_bits(0xC2AE_AC4F);
/// `-104`: the lower end of the exhaustively checked range (`exp(-104) < 2^-150`, so from here
/// down the correctly rounded result is 0).
const SUB_MIN: f32 = -104.0;
/// Up to here `exp(x)` is a finite normal f32 (`exp(88.72) = 3.39e38`).
const POS_FINITE: f32 = 88.72;
/// Above here `exp(x)` overflows (`ln f32::MAX = 88.7228`).
const POS_INF: f32 = 88.73;
/// `exp_nonpos` is checked up to here (see the module docs).
const NONPOS_HI: f32 = 64.0;

/// The largest ULP error allowed wherever a nonzero result is required.
const MAX_ULP: u32 = 2;

/// The correctly rounded reference (up to the rare double rounding of f64 then f32).
fn exp_ref(x: f32) -> f32 {
    ((x as f64).exp()) as f32
}

/// The ULP distance between a result `y` and a non-negative reference `r`: the difference of
/// their bit patterns, or `u32::MAX` when `y` is NaN or negative (including `-0.0`).
fn ulp(y: f32, r: f32) -> u32 {
    let (yb, rb) = (y.to_bits(), r.to_bits());
    if y.is_nan() || yb >> 31 != 0 {
        return u32::MAX;
    }
    yb.abs_diff(rb)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fun {
    /// `Kernels::exp_nonpos`: the exp inside softmax, for `x <= 0`.
    NonPos,
    /// `Kernels::exp`: the full-range exp.
    Full,
}

impl Fun {
    fn name(self) -> &'static str {
        match self {
            Fun::NonPos => "exp_nonpos",
            Fun::Full => "exp",
        }
    }

    fn run(self, k: &Kernels, x: &[f32], y: &mut [f32]) {
        match self {
            Fun::NonPos => k.exp_nonpos(x, y).unwrap(),
            Fun::Full => k.exp(x, y).unwrap(),
        }
    }
}

/// What a result must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Within [`MAX_ULP`] of the (normal, finite) reference.
    Ulp,
    /// The reference is subnormal or 0: exactly `+0.0` or within [`MAX_ULP`].
    SubOrZero,
    /// `+inf` if the reference overflows, else within [`MAX_ULP`].
    Overflow,
    /// Exactly `+0.0`.
    Zero,
    /// Exactly `+inf`.
    Inf,
    /// NaN.
    Nan,
    /// Outside the function's contract.
    Skip,
}

fn expect(f: Fun, x: f32) -> Expect {
    if x.is_nan() {
        return Expect::Nan;
    }
    match f {
        Fun::NonPos if x > NONPOS_HI => Expect::Skip,
        Fun::Full if x > POS_INF => Expect::Inf,
        Fun::Full if x > POS_FINITE => Expect::Overflow,
        _ if x >= NORMAL_MIN => Expect::Ulp,
        _ if x >= SUB_MIN => Expect::SubOrZero,
        _ => Expect::Zero,
    }
}

fn needs_ref(x: f32) -> bool {
    (SUB_MIN..=POS_INF).contains(&x)
}

/// Error statistics of one function of one tier over one range.
#[derive(Clone, Debug, Default)]
struct Stats {
    /// Results checked against the reference with a ULP bound (`Ulp` and finite `Overflow`).
    n: u64,
    /// How many of those were 0, 1, 2 and more than 2 ULP off.
    hist: [u64; 4],
    /// The largest ULP error of those, and the first `x` (in sweep order) where it occurs.
    max_ulp: u32,
    max_at: f32,
    /// Arguments whose reference is subnormal or 0 (`SubOrZero`).
    sub_n: u64,
    /// Of those: flushed to `+0.0` while the reference is nonzero.
    sub_flushed: u64,
    /// Of those: the reference is 0 and so is the result.
    sub_zero_exact: u64,
    /// Of those: a nonzero result, by ULP error 0, 1, 2, more.
    sub_hist: [u64; 4],
    /// The largest ULP error among nonzero subnormal-range results, and where.
    sub_max_ulp: u32,
    sub_max_at: f32,
    /// The flushed argument closest to 0 (highest) and the nonzero-result argument farthest
    /// from 0 (lowest).
    sub_flush_hi: Option<f32>,
    sub_nonzero_lo: Option<f32>,
    /// The lowest argument whose result overflowed to `+inf` where overflow is allowed.
    inf_lo: Option<f32>,
    /// Arguments with an exact expected result (`Zero`, `Inf`, `Nan`, overflowing `Overflow`).
    exact_n: u64,
    /// Every result that broke the contract: count and the first few `(x, y, reference)`.
    bad: u64,
    bad_examples: Vec<(f32, f32, f32)>,
}

const MAX_EXAMPLES: usize = 8;

fn opt_max(a: Option<f32>, b: Option<f32>) -> Option<f32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn opt_min(a: Option<f32>, b: Option<f32>) -> Option<f32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Stats {
    fn fail(&mut self, x: f32, y: f32, r: f32) {
        self.bad += 1;
        if self.bad_examples.len() < MAX_EXAMPLES {
            self.bad_examples.push((x, y, r));
        }
    }

    fn record_ulp(&mut self, x: f32, y: f32, r: f32) {
        let u = ulp(y, r);
        self.n += 1;
        self.hist[u.min(3) as usize] += 1;
        if u > self.max_ulp {
            self.max_ulp = u;
            self.max_at = x;
        }
        if u > MAX_ULP {
            self.fail(x, y, r);
        }
    }

    fn record(&mut self, e: Expect, x: f32, y: f32, r: f32) {
        match e {
            Expect::Skip => {}
            Expect::Ulp => self.record_ulp(x, y, r),
            Expect::Overflow if r.is_infinite() => {
                self.exact_n += 1;
                if y == f32::INFINITY {
                    self.inf_lo = opt_min(self.inf_lo, Some(x));
                }
                if y != f32::INFINITY {
                    self.fail(x, y, r);
                }
            }
            Expect::Overflow => {
                if y.is_infinite() {
                    self.fail(x, y, r);
                }
                self.record_ulp(x, y, r);
            }
            Expect::SubOrZero => {
                self.sub_n += 1;
                if y.to_bits() == 0 {
                    if r == 0.0 {
                        self.sub_zero_exact += 1;
                    } else {
                        self.sub_flushed += 1;
                        self.sub_flush_hi = opt_max(self.sub_flush_hi, Some(x));
                    }
                    return;
                }
                let u = ulp(y, r);
                self.sub_hist[u.min(3) as usize] += 1;
                self.sub_nonzero_lo = opt_min(self.sub_nonzero_lo, Some(x));
                if u > self.sub_max_ulp {
                    self.sub_max_ulp = u;
                    self.sub_max_at = x;
                }
                if u > MAX_ULP {
                    self.fail(x, y, r);
                }
            }
            Expect::Zero | Expect::Inf | Expect::Nan => {
                self.exact_n += 1;
                let ok = match e {
                    Expect::Zero => y.to_bits() == 0,
                    Expect::Inf => y == f32::INFINITY,
                    _ => y.is_nan(),
                };
                if !ok {
                    self.fail(x, y, r);
                }
            }
        }
    }

    /// Combines the statistics of two consecutive parts of a sweep (`self` first).
    fn merge(mut self, o: Stats) -> Stats {
        self.n += o.n;
        self.sub_n += o.sub_n;
        self.sub_flushed += o.sub_flushed;
        self.sub_zero_exact += o.sub_zero_exact;
        self.exact_n += o.exact_n;
        self.bad += o.bad;
        for i in 0..4 {
            self.hist[i] += o.hist[i];
            self.sub_hist[i] += o.sub_hist[i];
        }
        if o.max_ulp > self.max_ulp {
            self.max_ulp = o.max_ulp;
            self.max_at = o.max_at;
        }
        if o.sub_max_ulp > self.sub_max_ulp {
            self.sub_max_ulp = o.sub_max_ulp;
            self.sub_max_at = o.sub_max_at;
        }
        self.sub_flush_hi = opt_max(self.sub_flush_hi, o.sub_flush_hi);
        self.sub_nonzero_lo = opt_min(self.sub_nonzero_lo, o.sub_nonzero_lo);
        self.inf_lo = opt_min(self.inf_lo, o.inf_lo);
        let room = MAX_EXAMPLES - self.bad_examples.len();
        self.bad_examples
            .extend(o.bad_examples.into_iter().take(room));
        self
    }

    fn report(&self) -> String {
        let mut s = String::new();
        if self.n > 0 {
            let _ = write!(
                s,
                "\n      <=2 ULP part: {} args, max {} ULP at x = {:e} ({:#010x}); \
                 0 ULP: {}, 1 ULP: {}, 2 ULP: {}, >2 ULP: {}",
                self.n,
                self.max_ulp,
                self.max_at,
                self.max_at.to_bits(),
                self.hist[0],
                self.hist[1],
                self.hist[2],
                self.hist[3]
            );
        }
        if self.sub_n > 0 {
            let _ = write!(
                s,
                "\n      subnormal part: {} args; flushed to 0 (reference nonzero): {}; \
                 0 with reference 0: {}; nonzero: {} (0 ULP: {}, 1 ULP: {}, 2 ULP: {}, >2 ULP: {}), \
                 max {} ULP at x = {:e}",
                self.sub_n,
                self.sub_flushed,
                self.sub_zero_exact,
                self.sub_hist.iter().sum::<u64>(),
                self.sub_hist[0],
                self.sub_hist[1],
                self.sub_hist[2],
                self.sub_hist[3],
                self.sub_max_ulp,
                self.sub_max_at,
            );
            if let Some(x) = self.sub_flush_hi {
                let _ = write!(
                    s,
                    "\n        highest x flushed to 0 with a nonzero reference: {x:e} \
                     (reference {:e})",
                    exp_ref(x)
                );
            }
            if let Some(x) = self.sub_nonzero_lo {
                let _ = write!(
                    s,
                    "\n        lowest x with a nonzero result: {x:e} (reference {:e})",
                    exp_ref(x)
                );
            }
        }
        if self.exact_n > 0 {
            let _ = write!(s, "\n      exact-value part: {} args", self.exact_n);
        }
        if let Some(x) = self.inf_lo {
            let _ = write!(
                s,
                "\n        lowest x giving +inf: {x:e} ({:#010x}; f32::MAX.ln() = {:e})",
                x.to_bits(),
                f32::MAX.ln()
            );
        }
        let _ = write!(s, "\n      contract violations: {}", self.bad);
        for (x, y, r) in &self.bad_examples {
            let _ = write!(
                s,
                "\n        x = {x:e} ({:#010x}): got {y:e} ({:#010x}), reference {r:e} ({:#010x}), {} ULP",
                x.to_bits(),
                y.to_bits(),
                r.to_bits(),
                ulp(*y, *r)
            );
        }
        s
    }
}

/// A range of bit patterns, swept with a stride, and the functions checked on it.
struct Domain {
    name: &'static str,
    lo: u32,
    hi: u32,
    stride: u32,
    funs: &'static [Fun],
}

impl Domain {
    fn count(&self) -> u64 {
        (self.hi - self.lo) as u64 / self.stride as u64 + 1
    }

    fn bits(&self, i: u64) -> u32 {
        self.lo + (i * self.stride as u64) as u32
    }
}

const BOTH: &[Fun] = &[Fun::NonPos, Fun::Full];
const FULL: &[Fun] = &[Fun::Full];
const NONPOS: &[Fun] = &[Fun::NonPos];

/// The SIMD tiers under test.
fn tiers() -> Vec<(Isa, &'static Kernels)> {
    Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .map(|i| (i, Kernels::for_isa(i).unwrap()))
        .collect()
}

/// Sweeps one domain on every tier and function; returns the statistics per (tier, function),
/// in the order of `tiers` x `d.funs`.
fn sweep(d: &Domain, tiers: &[(Isa, &'static Kernels)]) -> Vec<Stats> {
    let combos = tiers.len() * d.funs.len();
    let n = d.count();
    let batches = n.div_ceil(BATCH as u64);
    (0..batches)
        .into_par_iter()
        .map(|b| {
            let start = b * BATCH as u64;
            let len = (n - start).min(BATCH as u64) as usize;
            let xs: Vec<f32> = (0..len as u64)
                .map(|i| f32::from_bits(d.bits(start + i)))
                .collect();
            let refs: Vec<f32> = xs
                .iter()
                .map(|&x| if needs_ref(x) { exp_ref(x) } else { f32::NAN })
                .collect();
            let mut ys = vec![0.0f32; len];
            let mut out = vec![Stats::default(); combos];
            for (t, (_, k)) in tiers.iter().enumerate() {
                for (j, &f) in d.funs.iter().enumerate() {
                    f.run(k, &xs, &mut ys);
                    let st = &mut out[t * d.funs.len() + j];
                    for ((&x, &y), &r) in xs.iter().zip(&ys).zip(&refs) {
                        st.record(expect(f, x), x, y, r);
                    }
                }
            }
            out
        })
        .reduce(
            || vec![Stats::default(); combos],
            |a, b| a.into_iter().zip(b).map(|(a, b)| a.merge(b)).collect(),
        )
}

/// Sweeps every domain, prints the statistics, and panics with a summary if any tier breaks
/// the contract.
fn check(domains: &[Domain]) {
    let tiers = tiers();
    assert!(!tiers.is_empty(), "no SIMD tier available");
    let names: Vec<&str> = tiers.iter().map(|(i, _)| i.name()).collect();
    println!("tiers under test: {names:?}");
    let mut failures = Vec::new();
    for d in domains {
        let t0 = Instant::now();
        let stats = sweep(d, &tiers);
        println!(
            "\n== {} (bits {:#010x}..={:#010x}, stride {}, {} args, {:.1} s)",
            d.name,
            d.lo,
            d.hi,
            d.stride,
            d.count(),
            t0.elapsed().as_secs_f64()
        );
        for (t, (isa, _)) in tiers.iter().enumerate() {
            for (j, f) in d.funs.iter().enumerate() {
                let st = &stats[t * d.funs.len() + j];
                println!("  {:>8} {:<10}{}", isa.name(), f.name(), st.report());
                if st.bad > 0 {
                    let (x, y, r) = st.bad_examples[0];
                    failures.push(format!(
                        "{} {} on {}: {} violations, max {} ULP at x = {:e} (normal part), \
                         max {} ULP at x = {:e} (subnormal part); first: x = {x:e} gives {y:e}, \
                         reference {r:e}",
                        isa.name(),
                        f.name(),
                        d.name,
                        st.bad,
                        st.max_ulp,
                        st.max_at,
                        st.sub_max_ulp,
                        st.sub_max_at
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "exp contract broken:\n{}",
        failures.join("\n")
    );
}

const NEG_ZERO: u32 = 0x8000_0000;
const NEG_INF: u32 = 0xFF80_0000;
const POS_INF_BITS: u32 = 0x7F80_0000;

fn b(x: f32) -> u32 {
    x.to_bits()
}

/// The domains of the exhaustive test (stride 1) or of a strided sample.
fn domains(stride: u32, tail_stride: u32) -> Vec<Domain> {
    vec![
        Domain {
            name: "[-104, -0.0]",
            lo: NEG_ZERO,
            hi: b(SUB_MIN),
            stride,
            funs: BOTH,
        },
        Domain {
            name: "[+0.0, 88.73]",
            lo: 0,
            hi: b(POS_INF),
            stride,
            funs: FULL,
        },
        Domain {
            name: "[+0.0, 64]",
            lo: 0,
            hi: b(NONPOS_HI),
            stride,
            funs: NONPOS,
        },
        Domain {
            name: "[-inf, -104) tail",
            lo: b(SUB_MIN) + 1,
            hi: NEG_INF,
            stride: tail_stride,
            funs: BOTH,
        },
        Domain {
            name: "(88.73, +inf] tail",
            lo: b(POS_INF) + 1,
            hi: POS_INF_BITS,
            stride: tail_stride,
            funs: FULL,
        },
        Domain {
            name: "+NaN (every payload)",
            lo: POS_INF_BITS + 1,
            hi: 0x7FFF_FFFF,
            stride: tail_stride,
            funs: BOTH,
        },
        Domain {
            name: "-NaN (every payload)",
            lo: NEG_INF + 1,
            hi: 0xFFFF_FFFF,
            stride: tail_stride,
            funs: BOTH,
        },
    ]
}

/// Every f32 within `r` bit patterns of `x` (same sign), as a domain.
fn window(name: &'static str, x: f32, r: u32, funs: &'static [Fun]) -> Domain {
    let c = x.to_bits();
    let sign = c & 0x8000_0000;
    Domain {
        name,
        lo: (c - r).max(sign),
        hi: c + r,
        stride: 1,
        funs,
    }
}

/// Runs both functions on special values at every position of short slices, so that the masked
/// tail and the vector body both see them.
#[test]
fn exp_special_values() {
    let cases: [(f32, f32, f32); 5] = [
        // (x, exp_nonpos(x), exp(x)); NaN means "any NaN".
        (f32::NEG_INFINITY, 0.0, 0.0),
        (-0.0, 1.0, 1.0),
        (0.0, 1.0, 1.0),
        (f32::NAN, f32::NAN, f32::NAN),
        (f32::INFINITY, f32::NAN, f32::INFINITY),
    ];
    for (isa, k) in tiers() {
        for &(v, want_nonpos, want_full) in &cases {
            for len in 1..=40 {
                for pos in 0..len {
                    let mut x = vec![-1.0f32; len];
                    x[pos] = v;
                    let mut y = vec![f32::NAN; len];
                    for (f, want) in [(Fun::NonPos, want_nonpos), (Fun::Full, want_full)] {
                        if f == Fun::NonPos && v == f32::INFINITY {
                            continue; // outside exp_nonpos's contract
                        }
                        f.run(k, &x, &mut y);
                        let got = y[pos];
                        let ok = if want.is_nan() {
                            got.is_nan()
                        } else {
                            got.to_bits() == want.to_bits()
                        };
                        assert!(
                            ok,
                            "{} {}({v}) at {pos} of {len}: got {got} ({:#010x}), want {want}",
                            isa.name(),
                            f.name(),
                            got.to_bits()
                        );
                        for (i, &yi) in y.iter().enumerate() {
                            if i != pos {
                                assert!(
                                    ulp(yi, exp_ref(-1.0)) <= MAX_ULP,
                                    "{} {}: neighbour {i} of {pos} in {len} is {yi}",
                                    isa.name(),
                                    f.name()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// About a million strided samples of the exhaustive test's ranges, plus every f32 near the
/// boundaries: where exp becomes subnormal, where `exp_nonpos` starts flushing to 0, where exp
/// reaches 0, and where it overflows.
#[test]
fn exp_sampled() {
    // Prime strides, so the samples visit every low-bit pattern of the mantissa.
    let mut ds = domains(2203, 65_537);
    ds.push(window(
        "around -87.33654 (normal/subnormal)",
        NORMAL_MIN,
        20_000,
        BOTH,
    ));
    ds.push(window(
        "around -87.68 (exp_nonpos flush)",
        -87.68,
        20_000,
        BOTH,
    ));
    ds.push(window(
        "around -103.97 (exp rounds to 0)",
        -103.97,
        20_000,
        BOTH,
    ));
    ds.push(window("around 88.7228 (overflow)", 88.7228, 20_000, FULL));
    ds.push(window("around -1", -1.0, 20_000, BOTH));
    ds.push(window("around 1", 1.0, 20_000, FULL));
    check(&ds);
}

/// Every f32 of `[-104, 0]` through `exp_nonpos` and `exp`, every f32 of `[0, 88.73]` through
/// `exp`, and every f32 of the tails and every NaN, on every SIMD tier.
#[test]
#[ignore = "exhaustive (about 5.4e9 arguments per tier); run with --release --ignored"]
fn exp_nonpos_exhaustive() {
    let t0 = Instant::now();
    check(&domains(1, 1));
    println!("\ntotal {:.1} s", t0.elapsed().as_secs_f64());
}
