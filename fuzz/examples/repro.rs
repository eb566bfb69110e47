//! Runs one target's checker on input files and prints the verdict (and, with `--dump`, the
//! decoded header): `cargo run --example repro -- <target> [--dump] FILE...`.

use fuzz_common::input::split;

/// The `linear_ce` target keeps its checker and header in the target's own file (its seeds
/// are unused here).
#[path = "../fuzz_targets/linear_ce.rs"]
#[allow(dead_code)]
mod linear_ce;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let target = args.first().expect("target").as_str();
    let dump = args.iter().any(|a| a == "--dump");
    let check: fn(&[u8]) -> Result<(), String> = match target {
        "softmax" => fuzz_common::softmax::check,
        "cross_entropy" => fuzz_common::cross_entropy::check,
        "linear" => fuzz_common::linear::check,
        "linear_ce" => linear_ce::check,
        "strided" => fuzz_common::strided::check,
        "token" => fuzz_common::token::check,
        t => panic!("unknown target {t}"),
    };
    for f in args.iter().skip(1).filter(|a| !a.starts_with("--")) {
        let data = std::fs::read(f).expect("read");
        if dump {
            let rest = match target {
                "softmax" => {
                    let (h, r) = split::<fuzz_common::softmax::SoftmaxHeader>(&data);
                    println!("{h:?}");
                    r
                }
                "cross_entropy" => {
                    let (h, r) = split::<fuzz_common::cross_entropy::CeHeader>(&data);
                    println!("{h:?}");
                    r
                }
                "strided" => {
                    let (h, r) = split::<fuzz_common::strided::StridedHeader>(&data);
                    println!("{h:?}");
                    r
                }
                "token" => {
                    let (h, r) = split::<fuzz_common::token::TokHeader>(&data);
                    println!("{h:?}");
                    r
                }
                "linear_ce" => {
                    let (h, r) = split::<linear_ce::LceHeader>(&data);
                    println!("{h:?}");
                    r
                }
                _ => {
                    let (h, r) = split::<fuzz_common::linear::LinHeader>(&data);
                    println!("{h:?}");
                    r
                }
            };
            let words: Vec<String> = rest
                .chunks(4)
                .map(|c| {
                    let mut b = [0u8; 4];
                    b[..c.len()].copy_from_slice(c);
                    let w = u32::from_le_bytes(b);
                    format!("{w:#010x}({:e})", f32::from_bits(w))
                })
                .collect();
            println!("data words: {}", words.join(" "));
        }
        match check(&data) {
            Ok(()) => println!("{f}: ok"),
            Err(e) => println!("{f}: DIVERGENCE\n{e}"),
        }
    }
}
