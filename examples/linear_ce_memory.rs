//! Peak memory (and time) of the fused linear cross-entropy against the unfused composition.
//!
//! ```text
//! cargo run --release --example linear_ce_memory -- --threads 1,2
//! cargo run --release --example linear_ce_memory -- --quick            # CI smoke test, < 10 s
//! cargo run --release --example linear_ce_memory -- 4096x32000x512 --reps 1 --threads 2
//! ```
//!
//! For each shape `BxCxD` (defaults: 1024x128256x256 and 512x32000x1024; `--quick`:
//! 256x4000x64 and 128x50000x32), each thread count (`--threads`, default `1,N` with `N` the
//! available parallelism) and each method, the program runs `--reps` (default 3)
//! measurements and prints a Markdown table: the median time, its ratio to the
//! unfused method, and the extra peak memory with its ratio to the unfused method's. The
//! methods (`--methods`, default all four) all compute the mean cross-entropy of
//! `Z = A W^T + b` against class labels and `dA`, `dW`, `db`:
//!
//! * `unfused`: `linear_forward` into a `[B, C]` buffer allocated by the method,
//!   `cross_entropy_with` with `Logits::InPlace` (the gradient over the logits),
//!   `linear_backward_input` (`dA`), `weight_grad(1.0, G, A, 0.0, dW)`, `bias_grad(1.0, G, 0.0,
//!   db)`.
//! * `fused`: `Kernels::linear_cross_entropy` with automatic chunking (16 MiB of logits).
//! * `rows`: the fused call with `chunk_rows(N)` for each `N` of `--chunk-rows` (default 64):
//!   whole rows, `N * C` floats of logits.
//! * `classes`: the fused call with `chunk_classes(K)` for each `K` of `--chunk-classes`
//!   (default 2048): the two-pass class-blocked mode.
//!
//! **How memory is measured.** Each measurement is a fresh child process (this program
//! re-executed through `std::env::current_exe()` with an internal `--child` flag), so no
//! allocation of an earlier measurement, no allocator cache and no earlier high-water mark is
//! counted. The child sets up its rayon pool (`--threads`), allocates and writes the inputs and
//! outputs (`a`, `w`, `bias`, labels, `dA`, `dW`, `db`: every page resident), resets the
//! kernel's high-water mark to the current RSS (writing `5` to `/proc/self/clear_refs`, where
//! the kernel allows it), reads `VmRSS` and `VmHWM` from `/proc/self/status` (the baseline),
//! runs the method once, timed with `Instant`, and reads `VmHWM` again (the peak). `extra =
//! peak - baseline` is what the method itself needed at its worst: the `[B, C]` logits for
//! `unfused`, the chunk of logits and the per-row state for `fused`, plus the GEMM packing
//! buffers and the threads' stacks for both. Linux only (it reads `/proc`).
//!
//! **What the time is.** One cold call in a fresh process: it includes the page faults on the
//! buffers the method allocates (for `unfused` up to 500 MiB of logits, which a training loop
//! keeping the buffer would fault in only once) and the first use of the thread pool. The
//! criterion bench `benches/linear_ce.rs` times warm calls with the unfused buffer allocated
//! once outside the loop. On a shared machine the times are indicative only.
//!
//! **Correctness check.** The parent compares every method's loss with the unfused loss of the
//! same shape and thread count (within 1e-4 relative) and the norms of `dA`, `dW`, `db` (within
//! 1e-3 relative); a mismatch or a failed child is reported and makes the exit status 1.
//!
//! Inputs are deterministic pseudo-random (SplitMix64): activations uniform in `[-1, 1]`,
//! weights and bias uniform in `[-0.05, 0.05]`, labels uniform over the classes.
//! Memory needed: the unfused method at 1024x128256x256 holds about 760 MiB (`W`, `dW` and
//! 500 MiB of logits).

use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::Instant;

use softmax_kernels::{
    CrossEntropyOptions, CrossEntropyOutputs, Kernels, LinearCeOptions, LinearCeOutputs, Logits,
    MatrixLayout, Targets,
};

/// The shapes measured without arguments.
const DEFAULT_SHAPES: &[Shape] = &[
    Shape {
        b: 1024,
        c: 128_256,
        d: 256,
    },
    Shape {
        b: 512,
        c: 32000,
        d: 1024,
    },
];

/// The shapes of `--quick` (automatic chunking takes whole rows for both on the SIMD tiers; the
/// `classes` method runs the class-blocked mode).
const QUICK_SHAPES: &[Shape] = &[
    Shape {
        b: 256,
        c: 4000,
        d: 64,
    },
    Shape {
        b: 128,
        c: 50000,
        d: 32,
    },
];

/// Relative tolerance on the loss against the unfused method.
const LOSS_RTOL: f64 = 1e-4;
/// Relative tolerance on the gradients' norms against the unfused method.
const NORM_RTOL: f64 = 1e-3;

const USAGE: &str = "\
usage: linear_ce_memory [BxCxD ...] [--threads 1,2] [--reps 3] [--methods unfused,fused,rows,classes]
                        [--chunk-rows 64] [--chunk-classes 2048] [--quick]
Measures the peak RSS and time of the fused linear cross-entropy against the unfused kernels,
each measurement in a fresh child process, and prints a Markdown table.";

/// A problem shape: `B` samples, `C` classes, `D` features.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    b: usize,
    c: usize,
    d: usize,
}

impl Shape {
    fn parse(s: &str) -> Result<Shape, String> {
        let v: Vec<usize> = s
            .split('x')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad shape {s:?}: expected BxCxD, e.g. 1024x128256x256"))?;
        match v[..] {
            [b, c, d] if b > 0 && c > 0 && d > 0 => Ok(Shape { b, c, d }),
            _ => Err(format!(
                "bad shape {s:?}: expected BxCxD with three positive sizes"
            )),
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.b, self.c, self.d)
    }
}

/// How the loss and gradients are computed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Unfused,
    Fused,
    Rows(usize),
    Classes(usize),
}

impl Method {
    /// The command-line form passed to the child.
    fn arg(self) -> String {
        match self {
            Method::Unfused => "unfused".into(),
            Method::Fused => "fused".into(),
            Method::Rows(n) => format!("rows:{n}"),
            Method::Classes(k) => format!("classes:{k}"),
        }
    }

    fn parse(s: &str) -> Result<Method, String> {
        let num = |v: &str| match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("bad method {s:?}: the chunk size must be >= 1")),
        };
        match s.split_once(':') {
            None if s == "unfused" => Ok(Method::Unfused),
            None if s == "fused" => Ok(Method::Fused),
            Some(("rows", n)) => num(n).map(Method::Rows),
            Some(("classes", k)) => num(k).map(Method::Classes),
            _ => Err(format!("bad method {s:?}")),
        }
    }

    /// The name in the table.
    fn label(self) -> String {
        match self {
            Method::Unfused => "unfused".into(),
            Method::Fused => "fused (auto)".into(),
            Method::Rows(n) => format!("fused --chunk-rows {n}"),
            Method::Classes(k) => format!("fused --chunk-classes {k}"),
        }
    }

    fn options(self) -> LinearCeOptions<'static> {
        let o = LinearCeOptions::default();
        match self {
            Method::Unfused | Method::Fused => o,
            Method::Rows(n) => o.chunk_rows(n),
            Method::Classes(k) => o.chunk_classes(k),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The child: one measurement.
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator (no dependency).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-h, h)`.
    fn sym(&mut self, h: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        (2.0 * u - 1.0) * h
    }

    /// `n` floats uniform in `[-h, h)`.
    fn vec(&mut self, n: usize, h: f32) -> Vec<f32> {
        (0..n).map(|_| self.sym(h)).collect()
    }
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_hwm_kib() -> Result<(u64, u64), String> {
    let s = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status (Linux only): {e}"))?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no {name} in /proc/self/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// Runs one measurement and prints its `RESULT` line.
fn child(shape: Shape, method: Method, threads: usize) -> Result<(), String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| format!("thread pool: {e}"))?;
    // Start every worker before the baseline (their stacks are not the method's memory).
    rayon::broadcast(|_| ());
    let k = Kernels::active().map_err(|e| e.to_string())?;
    let Shape { b, c, d } = shape;
    let layout = MatrixLayout::new(c, d);
    let mut rng = SplitMix(0x11CE_5EED ^ ((b * 31 + c) * 31 + d) as u64);
    let a = rng.vec(b * d, 1.0);
    let w = rng.vec(c * d, 0.05);
    let bias = rng.vec(c, 0.05);
    let labels: Vec<i64> = (0..b).map(|_| (rng.next() % c as u64) as i64).collect();
    // Non-zero fills: every page is written (a zeroed allocation could stay unmapped and only
    // be faulted in, and counted as extra, when the method writes it).
    let mut da = vec![0.5f32; b * d];
    let mut dw = vec![0.5f32; c * d];
    let mut db = vec![0.5f32; c];

    // Reset the high-water mark to the current RSS (Linux >= 4.0); the baseline HWM printed
    // below shows whether it worked.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (rss0, hwm0) = rss_hwm_kib()?;
    let t0 = Instant::now();
    let loss = match method {
        Method::Unfused => {
            let mut z = vec![0.0f32; b * c];
            k.linear_forward(&a, &w, layout, Some(&bias), &mut z)
                .map_err(|e| e.to_string())?;
            let st = k
                .cross_entropy_with(
                    Logits::InPlace(&mut z),
                    Targets::Classes(&labels),
                    c,
                    &CrossEntropyOptions::default(),
                    &mut CrossEntropyOutputs::default(),
                )
                .map_err(|e| e.to_string())?;
            k.linear_backward_input(&z, &w, layout, &mut da)
                .map_err(|e| e.to_string())?;
            k.weight_grad(1.0, &z, &a, 0.0, &mut dw, layout)
                .map_err(|e| e.to_string())?;
            k.bias_grad(1.0, &z, 0.0, &mut db)
                .map_err(|e| e.to_string())?;
            drop(z);
            st.loss_f64
        }
        _ => {
            let mut out = LinearCeOutputs {
                da: Some(&mut da),
                dw: Some(&mut dw),
                db: Some(&mut db),
                ..Default::default()
            };
            let opts = method.options();
            k.linear_cross_entropy(
                &a,
                &w,
                layout,
                Some(&bias),
                Targets::Classes(&labels),
                &opts,
                &mut out,
            )
            .map_err(|e| e.to_string())?
            .loss_f64
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let (_, hwm1) = rss_hwm_kib()?;
    println!(
        "RESULT rss0_kib={rss0} hwm0_kib={hwm0} hwm1_kib={hwm1} time_s={secs:e} loss={loss:e} \
         da={:e} dw={:e} db={:e} isa={}",
        norm(&da),
        norm(&dw),
        norm(&db),
        k.isa().name()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The parent: every measurement, the table.
// ---------------------------------------------------------------------------------------------

/// What one child reported.
#[derive(Clone, Debug)]
struct Measure {
    baseline_kib: u64,
    peak_kib: u64,
    time_s: f64,
    loss: f64,
    norms: [f64; 3],
    isa: String,
}

impl Measure {
    fn extra_mib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.baseline_kib) as f64 / 1024.0
    }

    fn parse(stdout: &str) -> Result<(Measure, u64), String> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or("no RESULT line")?;
        let get = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .ok_or_else(|| format!("no {key} in {line:?}"))
        };
        let num = |key: &str| -> Result<f64, String> {
            get(key)?.parse::<f64>().map_err(|e| format!("{key}: {e}"))
        };
        let int = |key: &str| -> Result<u64, String> {
            get(key)?.parse::<u64>().map_err(|e| format!("{key}: {e}"))
        };
        let hwm0 = int("hwm0_kib")?;
        Ok((
            Measure {
                baseline_kib: int("rss0_kib")?,
                peak_kib: int("hwm1_kib")?,
                time_s: num("time_s")?,
                loss: num("loss")?,
                norms: [num("da")?, num("dw")?, num("db")?],
                isa: get("isa")?.to_string(),
            },
            hwm0,
        ))
    }
}

/// Runs one measurement in a fresh child process.
fn run_child(shape: Shape, method: Method, threads: usize) -> Result<Measure, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args([
            "--child".to_string(),
            shape.to_string(),
            method.arg(),
            threads.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("child {}: {}", out.status, tail.join(" | ")));
    }
    let (m, hwm0) = Measure::parse(&stdout)?;
    if hwm0 > m.baseline_kib + 1024 {
        eprintln!(
            "  note: the high-water mark could not be reset (baseline RSS {} KiB, HWM {} KiB); \
             extra may be understated",
            m.baseline_kib, hwm0
        );
    }
    Ok(m)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The summary of one (shape, threads, method) cell.
struct Row {
    shape: Shape,
    method: Method,
    threads: usize,
    /// The median time, the largest extra, the first rep's measure; or why it failed.
    result: Result<(f64, f64, Measure), String>,
}

/// The ratio of a method's extra memory to the unfused method's, as "1/29" or "1.5x".
fn extra_ratio(extra: f64, unfused: f64) -> String {
    if unfused <= 0.0 {
        "-".into()
    } else if extra <= 0.05 {
        "~0".into()
    } else if extra <= unfused {
        let r = unfused / extra;
        if r < 1.05 {
            "1".into()
        } else if r < 10.0 {
            format!("1/{r:.1}")
        } else {
            format!("1/{r:.0}")
        }
    } else {
        format!("{:.1}x", extra / unfused)
    }
}

/// A duration with three or four significant digits: "2.341 s", "12.3 ms", "45.0 µs".
fn fmt_time(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn rel(x: f64, y: f64) -> f64 {
    if x == y {
        0.0
    } else {
        (x - y).abs() / y.abs().max(f64::MIN_POSITIVE)
    }
}

/// The command line of the parent.
struct Config {
    shapes: Vec<Shape>,
    threads: Vec<usize>,
    reps: usize,
    methods: Vec<Method>,
}

fn parse_list(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{flag}: expected positive integers, got {v:?}")),
        })
        .collect()
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut shapes = Vec::new();
    let mut threads = None;
    let mut reps = None;
    let mut kinds = vec!["unfused", "fused", "rows", "classes"];
    let mut rows = vec![64];
    let mut classes = vec![2048];
    let mut quick = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--threads" => threads = Some(parse_list("--threads", &value("--threads")?)?),
            "--reps" => reps = Some(parse_list("--reps", &value("--reps")?)?[0]),
            "--chunk-rows" => rows = parse_list("--chunk-rows", &value("--chunk-rows")?)?,
            "--chunk-classes" => {
                classes = parse_list("--chunk-classes", &value("--chunk-classes")?)?
            }
            "--methods" => {
                let v = value("--methods")?;
                kinds = Vec::new();
                for m in v.split(',') {
                    let k = ["unfused", "fused", "rows", "classes"]
                        .into_iter()
                        .find(|k| *k == m.trim())
                        .ok_or_else(|| format!("--methods: unknown method {m:?}"))?;
                    kinds.push(k);
                }
            }
            "--quick" => quick = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}\n{USAGE}")),
            s => shapes.push(Shape::parse(s)?),
        }
    }
    if shapes.is_empty() {
        shapes = if quick { QUICK_SHAPES } else { DEFAULT_SHAPES }.to_vec();
    }
    let threads = threads.unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        if n > 1 {
            vec![1, n]
        } else {
            vec![1]
        }
    });
    let mut methods = Vec::new();
    for k in kinds {
        match k {
            "unfused" => methods.push(Method::Unfused),
            "fused" => methods.push(Method::Fused),
            "rows" => methods.extend(rows.iter().map(|&n| Method::Rows(n))),
            _ => methods.extend(classes.iter().map(|&k| Method::Classes(k))),
        }
    }
    Ok(Config {
        shapes,
        threads,
        reps: reps.unwrap_or(3),
        methods,
    })
}

fn parent(cfg: &Config) -> ExitCode {
    let mut rows = Vec::new();
    for &shape in &cfg.shapes {
        for &threads in &cfg.threads {
            for &method in &cfg.methods {
                eprint!("{shape} {} threads={threads}: ", method.label());
                let mut ms = Vec::new();
                let mut err = None;
                for _ in 0..cfg.reps {
                    match run_child(shape, method, threads) {
                        Ok(m) => {
                            eprint!("{} {:.1} MiB; ", fmt_time(m.time_s), m.extra_mib());
                            ms.push(m);
                        }
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                eprintln!();
                let result = match err {
                    Some(e) => {
                        eprintln!("  FAILED: {e}");
                        Err(e)
                    }
                    None => {
                        let mut times: Vec<f64> = ms.iter().map(|m| m.time_s).collect();
                        let extra = ms.iter().map(Measure::extra_mib).fold(0.0, f64::max);
                        Ok((median(&mut times), extra, ms.swap_remove(0)))
                    }
                };
                rows.push(Row {
                    shape,
                    method,
                    threads,
                    result,
                });
            }
        }
    }

    let isa = rows
        .iter()
        .find_map(|r| r.result.as_ref().ok().map(|(_, _, m)| m.isa.clone()))
        .unwrap_or_else(|| "?".into());
    let mut table = String::new();
    let _ = writeln!(
        table,
        "Tier `{isa}`; each cell: the median of {} fresh process(es), one cold call each; \
         extra = peak RSS (VmHWM) - RSS after allocating inputs and outputs, the largest over \
         the reps.\n",
        cfg.reps
    );
    let _ = writeln!(
        table,
        "| shape (BxCxD) | method | threads | time | time / unfused | baseline (MiB) | \
         extra (MiB) | extra / unfused | loss vs unfused |"
    );
    let _ = writeln!(table, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    let mut bad = false;
    for r in &rows {
        let unfused = rows
            .iter()
            .find(|u| u.shape == r.shape && u.threads == r.threads && u.method == Method::Unfused)
            .and_then(|u| u.result.as_ref().ok());
        let head = format!("| {} | {} | {} |", r.shape, r.method.label(), r.threads);
        let (time, extra, m) = match &r.result {
            Ok(x) => x,
            Err(e) => {
                bad = true;
                let _ = writeln!(table, "{head} FAILED: {e} | | | | | |");
                continue;
            }
        };
        let (tr, er, check) = match unfused {
            Some((ut, ue, um)) if r.method != Method::Unfused => {
                let dl = rel(m.loss, um.loss);
                let dn = (0..3)
                    .map(|i| rel(m.norms[i], um.norms[i]))
                    .fold(0.0, f64::max);
                let ok = dl <= LOSS_RTOL && dn <= NORM_RTOL;
                bad |= !ok;
                let check = if ok && dl == 0.0 {
                    "ok (equal)".into()
                } else if ok {
                    format!("ok (rel. diff {dl:.0e})")
                } else {
                    format!(
                        "**MISMATCH** loss {:.7} vs {:.7}, grad norms {dn:.1e}",
                        m.loss, um.loss
                    )
                };
                (format!("{:.2}", time / ut), extra_ratio(*extra, *ue), check)
            }
            Some(_) => ("1".into(), "1".into(), format!("loss {:.6}", m.loss)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            table,
            "{head} {} | {tr} | {:.1} | {extra:.1} | {er} | {check} |",
            fmt_time(*time),
            m.baseline_kib as f64 / 1024.0
        );
    }
    println!("{table}");
    if bad {
        eprintln!("some measurements failed or disagree with the unfused method (see the table)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let run = || -> Result<(), String> {
            let [shape, method, threads] = &args[1..] else {
                return Err("--child SHAPE METHOD THREADS".into());
            };
            let threads = threads.parse().map_err(|_| "bad thread count")?;
            child(Shape::parse(shape)?, Method::parse(method)?, threads)
        };
        return match run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("linear_ce_memory child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse_args(&args) {
        Ok(cfg) => parent(&cfg),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
