//! One-shot performance report: measures the machine's limits (copy and read bandwidth per
//! memory level, the crate's exp throughput and the FMA peak per tier), runs every kernel
//! family on every tier at standard shapes on one thread and on all threads, prints a table
//! (throughput with noise, GB/s by a stated byte model, % of the limit measured in the same
//! run, speed-ups over `reference` and `portable`), and writes `results.json`, `results.csv`,
//! `limits.csv`, `report.txt` (the printed tables) and the chart `softmax_roofline.svg`.
//!
//! ```text
//! cargo run --release --example bench_report                   # full run (minutes)
//! cargo run --release --example bench_report -- --quick        # seconds
//! cargo run --release --example bench_report -- --filter cross_entropy --threads 2 --out /tmp/r
//! ```

#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod cases;
mod chart;
mod cli;
mod data;
mod harness;
mod limits;
mod machine;
mod prims;
mod progress;
mod report;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use softmax_kernels::Isa;

use crate::harness::Plan;
use crate::machine::Machine;
use crate::progress::Progress;

/// Prints to stdout and keeps a copy for `report.txt`.
#[derive(Default)]
struct Tee(String);

impl Tee {
    fn out(&mut self, s: &str) {
        print!("{s}");
        self.0.push_str(s);
    }
}

/// A tier's name in the report: the scalar tier is the f64 oracle, `reference`.
pub fn tier_name(isa: Isa) -> &'static str {
    if isa == Isa::Scalar {
        "reference"
    } else {
        isa.name()
    }
}

fn main() {
    let args = cli::parse();
    let start = Instant::now();
    let load_start = machine::loadavg();
    let machine = Machine::detect();
    let tiers = Isa::available();
    let mut thread_counts = vec![1];
    if args.threads != 1 {
        thread_counts.push(args.threads);
    }
    let pools: Vec<(usize, rayon::ThreadPool)> = thread_counts
        .iter()
        .map(|&t| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .thread_name(move |i| format!("bench-{t}t-{i}"))
                .build()
                .expect("a rayon pool");
            (t, pool)
        })
        .collect();
    let pool_of = |t: usize| {
        &pools
            .iter()
            .find(|p| p.0 == t)
            .expect("a pool per thread count")
            .1
    };
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("bench_report: cannot create {}: {e}", args.out.display());
        std::process::exit(1);
    }
    let cases = cases::plan(&tiers, &thread_counts, args.quick, args.filter.as_deref());
    let mode = if args.quick { "quick" } else { "full" };
    let mut tee = Tee::default();
    tee.out(&format!("# softmax-kernels bench_report ({mode})\n"));
    tee.out(&format!(
        "cpu: {} | {} CPUs | L1d {} KiB, L2 {} KiB, L3 {} MiB ({}) | tiers: {} | threads: 1 and {}\n",
        machine.cpu,
        machine.cpus,
        machine.l1d >> 10,
        machine.l2 >> 10,
        machine.l3 >> 20,
        machine.cache_source,
        tiers
            .iter()
            .map(|&t| tier_name(t))
            .collect::<Vec<_>>()
            .join(", "),
        args.threads
    ));
    if let Some(l) = &load_start {
        tee.out(&format!("load average at start (1/5/15 min): {l}\n"));
    }
    if cases.is_empty() {
        eprintln!(
            "bench_report: --filter {:?} matches no kernel; measuring the limits only",
            args.filter.as_deref().unwrap_or("")
        );
    }

    let pool_refs: Vec<(usize, &rayon::ThreadPool)> = pools.iter().map(|(t, p)| (*t, p)).collect();
    let progress = Progress::new(2 * limits::count(&tiers, &thread_counts) + cases.len());
    // The limits before and after the kernels: each limit's higher pass is its value.
    let mut limits = limits::Limits::default();
    progress.start("machine limits, pass 1");
    let measure_limits = |limits: &mut limits::Limits, pass| {
        limits::measure(
            limits, pass, &machine, &tiers, &pool_refs, &plan, args.quick, &progress,
        )
    };
    measure_limits(&mut limits, 1);
    let measured = cases::run(&cases, pool_of, &plan, &progress);
    progress.start("machine limits, pass 2");
    measure_limits(&mut limits, 2);
    progress.finish();

    let rows = report::rows(&measured, &limits, &machine);
    tee.out(
        "\n## Machine limits (measured in this run, before and after the kernels; aggregate \
         over the threads;\n   used = the fastest sample of the better pass; copy limits use \
         the better of memcpy and copy_simd)\n",
    );
    tee.out(&report::limits_table(&limits));
    tee.out(&format!("\n## Kernels\n{}\n", report::LEGEND));
    tee.out(&report::results_table(&rows));

    let elapsed = start.elapsed().as_secs_f64();
    let meta = report::Meta {
        mode,
        threads: args.threads,
        machine: machine.clone(),
        tiers: tiers.clone(),
        simd: prims::simd_name(),
        load_start: load_start.clone(),
        load_end: machine::loadavg(),
        elapsed_s: elapsed,
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        filter: args.filter.clone(),
    };
    let out = &args.out;
    let mut failed = false;
    let mut wrote = Vec::new();
    let mut check = |what: &str, r: Result<(), String>| match r {
        Ok(()) => wrote.push(out.join(what).display().to_string()),
        Err(e) => {
            eprintln!("bench_report: writing {what}: {e}");
            failed = true;
        }
    };
    let json = out.join("results.json");
    check(
        "results.json",
        report::write_json(&json, &meta, &limits, &rows).map_err(|e| e.to_string()),
    );
    check(
        "results.csv",
        report::write_results_csv(&out.join("results.csv"), &rows).map_err(|e| e.to_string()),
    );
    check(
        "limits.csv",
        report::write_limits_csv(&out.join("limits.csv"), &limits).map_err(|e| e.to_string()),
    );
    match chart::draw(&out.join("softmax_roofline.svg"), &rows, &limits, &tiers) {
        Ok(true) => check("softmax_roofline.svg", Ok(())),
        Ok(false) => eprintln!("bench_report: no softmax_sweep rows (filtered out): no chart"),
        Err(e) => check("softmax_roofline.svg", Err(e.to_string())),
    }
    tee.out(&format!(
        "\nload average at end: {} | total time {:.1} s\n",
        meta.load_end.as_deref().unwrap_or("n/a"),
        elapsed
    ));
    check(
        "report.txt",
        std::fs::write(out.join("report.txt"), &tee.0).map_err(|e| e.to_string()),
    );
    println!("wrote: {}", wrote.join(", "));
    if failed {
        std::process::exit(1);
    }
}
