//! Command-line options.

use std::path::PathBuf;

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct Args {
    /// Fewer shapes, repetitions and shorter samples (seconds, for CI and a first look).
    pub quick: bool,
    /// The "all threads" thread count.
    pub threads: usize,
    /// Only run kernels whose id (`family/tier/shape`) contains this.
    pub filter: Option<String>,
    /// Where JSON, CSV and SVG go.
    pub out: PathBuf,
}

pub const USAGE: &str = "\
bench_report: measures the machine's limits and every kernel family on every tier, prints a
table, and writes results.json, results.csv, limits.csv, report.txt (the printed tables) and
softmax_roofline.svg (softmax throughput vs row length with the exp and bandwidth ceilings).

USAGE:
    cargo run --release --example bench_report -- [OPTIONS]

OPTIONS:
    --quick          fewer shapes and repetitions (well under a minute; for CI / a first look)
    --threads N      the \"all threads\" count (default: available parallelism)
    --filter NAME    only kernels whose id `family/tier/shape` contains NAME
                     (e.g. softmax, cross_entropy, rank1_update, weight_grad, sgd_step,
                     train_step, avx512); the machine limits are always measured
    --out DIR        output folder (default: <crate>/target/bench_report)
    -h, --help       this text
";

/// The default output folder: `target/bench_report` of this crate.
fn default_out() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench_report")
}

/// Parses `std::env::args()`; prints usage and exits on `--help` or an error.
pub fn parse() -> Args {
    match parse_from(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("bench_report: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

/// `Ok(None)` for `--help`.
fn parse_from(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let default_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = Args {
        quick: false,
        threads: default_threads,
        filter: None,
        out: default_out(),
    };
    while let Some(a) = it.next() {
        // Accept both `--opt value` and `--opt=value`.
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "--quick" => args.quick = true,
            "--threads" => {
                let v = value("a thread count")?;
                args.threads = v
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("--threads: `{v}` is not a count >= 1"))?;
            }
            "--filter" => args.filter = Some(value("a name")?),
            "--out" => args.out = PathBuf::from(value("a folder")?),
            "-h" | "--help" => return Ok(None),
            // `cargo bench`-style harness flags are harmless; ignore them.
            "--bench" => {}
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Option<Args>, String> {
        parse_from(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn options() {
        let a = p(&[
            "--quick",
            "--threads",
            "3",
            "--filter=soft",
            "--out",
            "/tmp/x",
        ])
        .unwrap()
        .unwrap();
        assert!(a.quick);
        assert_eq!(a.threads, 3);
        assert_eq!(a.filter.as_deref(), Some("soft"));
        assert_eq!(a.out, PathBuf::from("/tmp/x"));
        assert!(p(&["--threads", "0"]).is_err());
        assert!(p(&["--threads"]).is_err());
        assert!(p(&["--nope"]).is_err());
        assert!(p(&["-h"]).unwrap().is_none());
    }
}
