//! Derived numbers (throughput, GB/s, the limit each row is held against, speed-ups), the
//! printed tables, and the JSON and CSV files.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use softmax_kernels::{Isa, Kernels};

use crate::cases::{Compute, Family, Measured, Mem, Unit};
use crate::limits::{Limit, Limits};
use crate::machine::{Level, Machine};
use crate::tier_name;

/// What a row's "% of limit" is measured against: the lower of its memory roof (bandwidth
/// of the level its footprint lives in / its bytes per unit of work) and its compute roof.
#[derive(Clone, Debug)]
pub struct Bound {
    /// e.g. `L3 copy 95.1 GB/s`, `exp avx512 9.12 Gelem/s`, `FMA avx512 (sgemm) 88 GFLOP/s`.
    pub label: String,
    /// `memory` or `compute`.
    pub kind: &'static str,
    /// The limit in the row's unit (Gelem/s or GFLOP/s).
    pub in_unit: f64,
}

/// One result row.
#[derive(Clone, Debug)]
pub struct Row {
    pub m: Measured,
    /// Gelem/s or GFLOP/s.
    pub throughput: f64,
    /// GB/s by the family's byte model.
    pub gbps: f64,
    /// Where the footprint lives between calls.
    pub level: Level,
    pub bound: Option<Bound>,
    /// Throughput / bound, a fraction.
    pub pct: Option<f64>,
    /// Speed-up over the reference tier (same family, shape, threads).
    pub vs_ref: Option<f64>,
    /// Speed-up over the portable tier.
    pub vs_portable: Option<f64>,
}

/// The crate runs calls of at most this many elements inline on the calling thread (its
/// `parallel::INLINE_ELEMS`, "small calls run inline" in the crate docs).
const INLINE_ELEMS: f64 = 16.0 * 1024.0;

/// What the results table's columns mean.
pub const LEGEND: &str = "\
time/call   median seconds per call (after warm-up)
throughput  work / time/call: Gelem/s (elements of the input, or of W for rank1_update) or
            GFLOP/s (GEMM work); ±noise = min-max spread: every sample within it of the median
GB/s        bytes by the family's byte model (stated per family) / time/call
lvl         where the footprint stays between calls (L1/L2 per thread, L3 shared, else DRAM)
limit used  the lower roof: memory (that level's copy, read or read-modify-write bandwidth,
            as the family's access pattern, x work per byte) or
            compute (the tier's exp throughput, 1 exp per element; the FMA peak of the code
            that runs for GEMM work: the tier's own rank-k kernel up to rank_k_max, else
            matrixmultiply's sgemm with the best tier's peak); same thread count as the row
roof        the limit used in the row's unit (Gelem/s or GFLOP/s): bandwidth / bytes per unit
            of work, the exp throughput, the FMA peak (/2 for one FMA per element)
%lim        throughput / roof; '!' marks > 100%: the limit was measured under another
            neighbour load, or a 'DRAM' footprint of a few L3 sizes partly stays in L3
vs ref/port speed-up over the reference (f64 oracle) and portable tiers, same shape and threads
Small calls (<= 16K elements) run inline on one thread even in the all-threads pool.";

/// Three significant digits, no exponent.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Seconds with a unit.
pub fn fmt_time(s: f64) -> String {
    if s < 1e-6 {
        format!("{} ns", fmt_num(s * 1e9))
    } else if s < 1e-3 {
        format!("{} us", fmt_num(s * 1e6))
    } else if s < 1.0 {
        format!("{} ms", fmt_num(s * 1e3))
    } else {
        format!("{} s", fmt_num(s))
    }
}

/// `L3 copy 96.3 GB/s`, `FMA avx512 (sgemm) 117 GFLOP/s`, `FMA avx2 118 GFLOP/s /2`.
fn limit_label(l: &Limit, extra: &str) -> String {
    let (tag, suffix) = match extra {
        " /2" => ("", extra),
        _ => (extra, ""),
    };
    format!(
        "{}{} {} {}{}",
        l.label(),
        tag,
        fmt_num(l.value),
        l.kind.unit(),
        suffix
    )
}

/// The bound of one measured case.
fn bound(m: &Measured, level: Level, limits: &Limits) -> Option<Bound> {
    let c = &m.case;
    let fam = c.family;
    let (work, bytes) = (fam.work(c.shape), fam.bytes(c.shape));
    let mem_limit = match fam.mem() {
        Mem::Copy => limits.copy(level, c.threads),
        Mem::Read => limits.read(level, c.threads),
        Mem::Rmw => limits.rmw(level, c.threads),
    };
    let mem = mem_limit.map(|l| Bound {
        label: limit_label(l, ""),
        kind: "memory",
        in_unit: l.value * work / bytes,
    });
    let compute = match fam.compute() {
        Compute::Exp => limits.exp(c.tier, c.threads).map(|l| Bound {
            label: limit_label(l, ""),
            kind: "compute",
            in_unit: l.value,
        }),
        // The reference tier is the f64 oracle: no peak is defined for it.
        _ if c.tier == Isa::Scalar => None,
        Compute::FmaPerElem => limits.fma(c.tier, c.threads).map(|l| Bound {
            label: limit_label(l, " /2"),
            kind: "compute",
            in_unit: l.value / 2.0,
        }),
        Compute::Gemm => {
            let k = Kernels::for_isa(c.tier).expect("available");
            // Batches up to rank_k_max run the tier's own streaming rank-k kernel; above it
            // (and the train step's forward GEMM always) run matrixmultiply's sgemm, which picks
            // its micro-kernel at run time: the machine's best FMA peak.
            let own =
                matches!(fam, Family::WeightGrad | Family::SgdStep) && c.shape.b <= k.rank_k_max();
            let l = if own {
                limits.fma(c.tier, c.threads)
            } else {
                limits.fma_best(c.threads)
            };
            l.map(|l| Bound {
                label: limit_label(l, if own { " (rank-k)" } else { " (sgemm)" }),
                kind: "compute",
                in_unit: l.value,
            })
        }
    };
    if fam.compute() == Compute::Gemm && compute.is_none() {
        return None;
    }
    match (mem, compute) {
        (Some(a), Some(b)) => Some(if a.in_unit <= b.in_unit { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Derives every row.
pub fn rows(measured: &[Measured], limits: &Limits, machine: &Machine) -> Vec<Row> {
    type Key = (&'static str, String, usize);
    let key =
        |m: &Measured| -> Key { (m.case.family.name(), m.case.shape_label(), m.case.threads) };
    let mut by_tier: HashMap<(Key, Isa), f64> = HashMap::new();
    for m in measured {
        by_tier.insert((key(m), m.case.tier), m.timing.median);
    }
    measured
        .iter()
        .map(|m| {
            let c = &m.case;
            let t = m.timing.median;
            // Calls of at most INLINE_ELEMS elements run on the calling thread alone.
            let used = if c.family.unit() == Unit::Elem && c.family.work(c.shape) <= INLINE_ELEMS {
                1
            } else {
                c.threads
            };
            let level = machine.level_of(c.family.footprint(c.shape), used);
            let throughput = c.family.work(c.shape) / t / 1e9;
            let b = bound(m, level, limits);
            let vs = |tier: Isa| by_tier.get(&(key(m), tier)).map(|&r| r / t);
            Row {
                m: *m,
                throughput,
                gbps: c.family.bytes(c.shape) / t / 1e9,
                level,
                pct: b.as_ref().map(|b| throughput / b.in_unit),
                bound: b,
                vs_ref: vs(Isa::Scalar),
                vs_portable: vs(Isa::Portable),
            }
        })
        .collect()
}

fn opt_x(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{}x", fmt_num(v)))
}

/// The limits table: each limit's two passes (fastest sample, median, noise) and the value
/// used (the higher pass's fastest sample).
pub fn limits_table(limits: &Limits) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:<9} {:>3}  {:>7} {:<7}  {:>22}  {:>22}  how",
        "limit", "at", "thr", "used", "unit", "pass 1: best/median", "pass 2: best/median"
    );
    let pass = |l: Option<&Limit>| {
        l.map_or("-".to_string(), |l| {
            format!(
                "{} / {} ±{:.0}%",
                fmt_num(l.value),
                fmt_num(l.median_value),
                100.0 * l.timing.spread()
            )
        })
    };
    for l in limits.all.iter().filter(|l| l.pass == 1) {
        let at = l
            .level
            .filter(|_| l.tier.is_none())
            .map(|v| v.name().to_string())
            .or(l.tier.map(|t| tier_name(t).to_string()))
            .unwrap_or_default();
        let p2 = limits.pass_of(l, 2);
        let used = p2.map_or(l.value, |m| m.value.max(l.value));
        let _ = writeln!(
            s,
            "{:<12} {:<9} {:>3}  {:>7} {:<7}  {:>22}  {:>22}  {}",
            l.kind.name(),
            at,
            l.threads,
            fmt_num(used),
            l.kind.unit(),
            pass(Some(l)),
            pass(p2),
            l.note
        );
    }
    s
}

/// The results table, one block per family.
pub fn results_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let mut fam: Option<Family> = None;
    for r in rows {
        let c = &r.m.case;
        if fam != Some(c.family) {
            fam = Some(c.family);
            let f = c.family;
            let _ = writeln!(
                s,
                "\n## {}: {}\n   work: {} ({}); bytes: {}",
                f.name(),
                f.call(),
                f.work_model(),
                f.unit().rate(),
                f.byte_model()
            );
            let _ = writeln!(
                s,
                "{:<15} {:<9} {:>3}  {:>10}  {:>21}  {:>7}  {:<4}  {:<34} {:>6} {:>6}  {:>7}  {:>7}",
                "shape",
                "tier",
                "thr",
                "time/call",
                "throughput (±noise)",
                "GB/s",
                "lvl",
                "limit used",
                "roof",
                "%lim",
                "vs ref",
                "vs port"
            );
        }
        let tp = format!(
            "{} {} ±{:.0}%",
            fmt_num(r.throughput),
            c.family.unit().rate(),
            100.0 * r.m.timing.spread()
        );
        let _ =
            writeln!(
            s,
            "{:<15} {:<9} {:>3}  {:>10}  {:>21}  {:>7}  {:<4}  {:<34} {:>6} {:>6}  {:>7}  {:>7}",
            c.shape_label(),
            tier_name(c.tier),
            c.threads,
            fmt_time(r.m.timing.median),
            tp,
            fmt_num(r.gbps),
            r.level.name(),
            r.bound
                .as_ref()
                .map_or("- (f64 oracle)".to_string(), |b| b.label.clone()),
            r.bound.as_ref().map_or("-".to_string(), |b| fmt_num(b.in_unit)),
            r.pct.map_or("-".to_string(), |p| format!(
                "{:.0}%{}",
                100.0 * p,
                if p > 1.0 { "!" } else { "" }
            )),
            opt_x(r.vs_ref),
            opt_x(r.vs_portable),
        );
    }
    s
}

// ---------------------------------------------------------------------------------------
// JSON and CSV, written by hand.

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".to_string()
    }
}

fn json_opt(v: Option<f64>) -> String {
    v.map_or("null".to_string(), json_num)
}

/// Run metadata for the JSON file.
pub struct Meta {
    pub mode: &'static str,
    pub threads: usize,
    pub machine: Machine,
    pub tiers: Vec<Isa>,
    pub simd: &'static str,
    pub load_start: Option<String>,
    pub load_end: Option<String>,
    pub elapsed_s: f64,
    pub unix_time: u64,
    pub filter: Option<String>,
}

pub fn write_json(path: &Path, meta: &Meta, limits: &Limits, rows: &[Row]) -> io::Result<()> {
    let mut s = String::new();
    let m = &meta.machine;
    s.push_str("{\n  \"meta\": {\n");
    let fields: Vec<(&str, String)> = vec![
        ("tool", json_str("softmax-kernels examples/bench_report")),
        ("mode", json_str(meta.mode)),
        ("all_threads", meta.threads.to_string()),
        ("cpu", json_str(&m.cpu)),
        ("available_parallelism", m.cpus.to_string()),
        ("l1d_bytes", m.l1d.to_string()),
        ("l2_bytes", m.l2.to_string()),
        ("l3_bytes", m.l3.to_string()),
        ("cache_source", json_str(m.cache_source)),
        (
            "tiers",
            format!(
                "[{}]",
                meta.tiers
                    .iter()
                    .map(|&t| json_str(tier_name(t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        ("copy_read_simd", json_str(meta.simd)),
        (
            "loadavg_start",
            meta.load_start.as_deref().map_or("null".into(), json_str),
        ),
        (
            "loadavg_end",
            meta.load_end.as_deref().map_or("null".into(), json_str),
        ),
        ("elapsed_s", json_num(meta.elapsed_s)),
        ("unix_time", meta.unix_time.to_string()),
        (
            "filter",
            meta.filter.as_deref().map_or("null".into(), json_str),
        ),
        (
            "noise",
            json_str(
                "min-max spread: every sample's throughput lies within ±noise of the median's",
            ),
        ),
        (
            "limit",
            json_str(
                "min(memory roof, compute roof): memory = copy, read or rmw bandwidth of the level \
                 the footprint lives in x work per byte; compute = the tier's exp throughput \
                 (1 exp per element), or the FMA peak of the code that runs (GEMM); limits are \
                 the fastest sample of the better of two passes (before and after the kernels), \
                 kernels the median",
            ),
        ),
    ];
    for (i, (k, v)) in fields.iter().enumerate() {
        let comma = if i + 1 < fields.len() { "," } else { "" };
        let _ = writeln!(s, "    {}: {v}{comma}", json_str(k));
    }
    s.push_str("  },\n  \"limits\": [\n");
    for (i, l) in limits.all.iter().enumerate() {
        let comma = if i + 1 < limits.all.len() { "," } else { "" };
        let _ = writeln!(
            s,
            "    {{\"kind\": {}, \"level\": {}, \"tier\": {}, \"threads\": {}, \"pass\": {}, \
             \"bytes_per_thread\": {}, \"work_per_call\": {}, \"value_best\": {}, \"value_median\": {}, \"unit\": {}, \
             \"median_s\": {}, \"min_s\": {}, \"max_s\": {}, \"samples\": {}, \"iters\": {}, \
             \"noise\": {}, \"note\": {}}}{comma}",
            json_str(l.kind.name()),
            l.level.map_or("null".into(), |v| json_str(v.name())),
            l.tier.map_or("null".into(), |t| json_str(tier_name(t))),
            l.threads,
            l.pass,
            l.bytes_per_thread,
            json_num(l.work),
            json_num(l.value),
            json_num(l.median_value),
            json_str(l.kind.unit()),
            json_num(l.timing.median),
            json_num(l.timing.min),
            json_num(l.timing.max),
            l.timing.samples,
            l.timing.iters,
            json_num(l.timing.spread()),
            json_str(&l.note),
        );
    }
    s.push_str("  ],\n  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let c = &r.m.case;
        let t = &r.m.timing;
        let comma = if i + 1 < rows.len() { "," } else { "" };
        let _ =
            writeln!(
            s,
            "    {{\"family\": {}, \"shape\": {}, \"b\": {}, \"c\": {}, \"d\": {}, \"tier\": {}, \
             \"threads\": {}, \"median_s\": {}, \"min_s\": {}, \"max_s\": {}, \"samples\": {}, \
             \"iters\": {}, \"noise\": {}, \"throughput\": {}, \"unit\": {}, \"gbps\": {}, \
             \"byte_model\": {}, \"level\": {}, \"limit\": {}, \"limit_kind\": {}, \
             \"limit_in_unit\": {}, \"pct_of_limit\": {}, \"speedup_vs_reference\": {}, \
             \"speedup_vs_portable\": {}}}{comma}",
            json_str(c.family.name()),
            json_str(&c.shape_label()),
            c.shape.b,
            c.shape.c,
            c.shape.d,
            json_str(tier_name(c.tier)),
            c.threads,
            json_num(t.median),
            json_num(t.min),
            json_num(t.max),
            t.samples,
            t.iters,
            json_num(t.spread()),
            json_num(r.throughput),
            json_str(c.family.unit().rate()),
            json_num(r.gbps),
            json_str(c.family.byte_model()),
            json_str(r.level.name()),
            r.bound.as_ref().map_or("null".into(), |b| json_str(&b.label)),
            r.bound.as_ref().map_or("null".into(), |b| json_str(b.kind)),
            json_opt(r.bound.as_ref().map(|b| b.in_unit)),
            json_opt(r.pct.map(|p| 100.0 * p)),
            json_opt(r.vs_ref),
            json_opt(r.vs_portable),
        );
    }
    s.push_str("  ]\n}\n");
    std::fs::write(path, s)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v}"))
}

pub fn write_results_csv(path: &Path, rows: &[Row]) -> io::Result<()> {
    let mut s = String::from(
        "family,shape,b,c,d,tier,threads,median_s,min_s,max_s,samples,iters,noise_pct,\
         throughput,unit,gbps,byte_model,level,limit,limit_kind,limit_in_unit,pct_of_limit,\
         speedup_vs_reference,speedup_vs_portable\n",
    );
    for r in rows {
        let c = &r.m.case;
        let t = &r.m.timing;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.2},{},{},{},{},{},{},{},{},{},{},{}",
            c.family.name(),
            csv_field(&c.shape_label()),
            c.shape.b,
            c.shape.c,
            c.shape.d,
            tier_name(c.tier),
            c.threads,
            t.median,
            t.min,
            t.max,
            t.samples,
            t.iters,
            100.0 * t.spread(),
            r.throughput,
            c.family.unit().rate(),
            r.gbps,
            csv_field(c.family.byte_model()),
            r.level.name(),
            csv_field(r.bound.as_ref().map_or("", |b| b.label.as_str())),
            r.bound.as_ref().map_or("", |b| b.kind),
            csv_opt(r.bound.as_ref().map(|b| b.in_unit)),
            csv_opt(r.pct.map(|p| 100.0 * p)),
            csv_opt(r.vs_ref),
            csv_opt(r.vs_portable),
        );
    }
    std::fs::write(path, s)
}

pub fn write_limits_csv(path: &Path, limits: &Limits) -> io::Result<()> {
    let mut s = String::from(
        "kind,level,tier,threads,pass,bytes_per_thread,value_best,value_median,unit,median_s,\
         min_s,max_s,samples,iters,noise_pct,note\n",
    );
    for l in &limits.all {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.2},{}",
            l.kind.name(),
            l.level.map_or("", Level::name),
            l.tier.map_or("", tier_name),
            l.threads,
            l.pass,
            l.bytes_per_thread,
            l.value,
            l.median_value,
            l.kind.unit(),
            l.timing.median,
            l.timing.min,
            l.timing.max,
            l.timing.samples,
            l.timing.iters,
            100.0 * l.timing.spread(),
            csv_field(&l.note),
        );
    }
    std::fs::write(path, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_num(0.1234), "0.123");
        assert_eq!(fmt_time(2.5e-8), "25.0 ns");
        assert_eq!(fmt_time(0.0015), "1.50 ms");
        assert_eq!(json_str("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
    }
}
