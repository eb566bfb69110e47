//! Writes the seed corpus (`fuzz_common::seeds`, and the `linear_ce` target's own seeds) to
//! `fuzz/corpus/<target>/seed-<name>`.
//! Run from `fuzz/`: `cargo run --example gen_corpus`. Existing seed files are replaced; other
//! corpus entries (found by fuzzing, or regression inputs) are left alone.

use std::path::Path;

/// The `linear_ce` target keeps its checker, header and seeds in the target's own file.
#[path = "../fuzz_targets/linear_ce.rs"]
mod linear_ce;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut seeds = fuzz_common::seeds::all();
    seeds.extend(linear_ce::seeds());
    for s in &seeds {
        let dir = root.join(s.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{}", s.name)), &s.bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
