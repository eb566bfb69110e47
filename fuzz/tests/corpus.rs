//! Runs on stable Rust (no libFuzzer, no sanitizer): the seeds decode to the inputs they were
//! built from, the committed corpus matches the seed definitions, and every committed corpus
//! file passes its target's checker.

use std::path::Path;

use fuzz_common::cross_entropy::CeHeader;
use fuzz_common::input::{split, Enc};
use fuzz_common::linear::LinHeader;
use fuzz_common::shard::ShardHeader;
use fuzz_common::softmax::SoftmaxHeader;
use fuzz_common::strided::StridedHeader;
use fuzz_common::token::TokHeader;

/// The `linear_ce` target keeps its checker, header and seeds in the target's own file.
#[path = "../fuzz_targets/linear_ce.rs"]
mod linear_ce;

fn checker(target: &str) -> fn(&[u8]) -> Result<(), String> {
    match target {
        "softmax" => fuzz_common::softmax::check,
        "cross_entropy" => fuzz_common::cross_entropy::check,
        "linear" => fuzz_common::linear::check,
        "linear_ce" => linear_ce::check,
        "strided" => fuzz_common::strided::check,
        "token" => fuzz_common::token::check,
        "shard" => fuzz_common::shard::check,
        t => panic!("unknown target {t}"),
    }
}

/// Every target's seeds: `fuzz_common::seeds` and the `linear_ce` target's own.
fn all_seeds() -> Vec<fuzz_common::seeds::Seed> {
    let mut v = fuzz_common::seeds::all();
    v.extend(linear_ce::seeds());
    v
}

/// `split` then re-encoding gives back the same header bytes.
fn roundtrip<'a, H: arbitrary::Arbitrary<'a> + Enc>(bytes: &'a [u8]) -> bool {
    let (h, rest) = split::<H>(bytes);
    let mut out = Vec::new();
    h.enc(&mut out);
    out.extend_from_slice(rest);
    out == bytes
}

#[test]
fn seeds_decode_as_encoded() {
    for s in all_seeds() {
        let ok = match s.target {
            "softmax" => roundtrip::<SoftmaxHeader>(&s.bytes),
            "cross_entropy" => roundtrip::<CeHeader>(&s.bytes),
            "linear_ce" => roundtrip::<linear_ce::LceHeader>(&s.bytes),
            "strided" => roundtrip::<StridedHeader>(&s.bytes),
            "token" => roundtrip::<TokHeader>(&s.bytes),
            "shard" => roundtrip::<ShardHeader>(&s.bytes),
            _ => roundtrip::<LinHeader>(&s.bytes),
        };
        assert!(ok, "seed {} of {} does not round-trip", s.name, s.target);
    }
}

#[test]
fn committed_seeds_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for s in all_seeds() {
        let p = root.join(s.target).join(format!("seed-{}", s.name));
        let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(
            got,
            s.bytes,
            "{} is stale: run `cargo run --example gen_corpus`",
            p.display()
        );
    }
}

#[test]
fn committed_corpus_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut failures = Vec::new();
    let mut n = 0;
    for target in [
        "softmax",
        "cross_entropy",
        "linear",
        "linear_ce",
        "strided",
        "token",
        "shard",
    ] {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for p in files {
            let data = std::fs::read(&p).unwrap();
            n += 1;
            if let Err(e) = checker(target)(&data) {
                failures.push(format!("{}:\n{e}", p.display()));
            }
        }
    }
    println!("{n} corpus files checked");
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
