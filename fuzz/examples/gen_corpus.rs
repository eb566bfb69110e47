//! Writes the seed corpus (`fuzz_common::seeds`) to `fuzz/corpus/<target>/seed-<name>`.
//! Run from `fuzz/`: `cargo run --example gen_corpus`. Existing seed files are replaced; other
//! corpus entries (found by fuzzing, or regression inputs) are left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = fuzz_common::seeds::all();
    for s in &seeds {
        let dir = root.join(s.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{}", s.name)), &s.bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
