//! The fuzz targets' shared code: the input format ([`input`]), one checker per kernel family
//! ([`softmax`], [`cross_entropy`], [`linear`], [`token`]), the strided views against the
//! contiguous calls ([`strided`]), the vocabulary shards and top-k against the unsharded calls
//! ([`shard`]), and the seed corpus ([`seeds`]).
//!
//! Each checker takes the raw fuzz input, decodes a shape, a tier (from `Isa::available()`,
//! never the scalar reference itself), option values and the data, runs the tier and the
//! reference (`Kernels::for_isa(Isa::Scalar)`) on identical copies, and returns `Err(report)`
//! on any divergence: a different `Ok`/`Err` (or a different error), an output written on
//! error, a different NaN/infinity pattern where the contract defines one, or a finite value
//! outside the documented tolerance. The fuzz targets panic with the report; the tests in
//! `fuzz/tests/` run the committed corpus through the same checkers on stable Rust.
//!
//! The softmax family's tolerances are the shared oracle's (`tests/common/oracle.rs`, included
//! below), so those rules are written once. The cross-entropy and linear families have no
//! shared oracle; their error models (and the token log-probs' in [`token`]) are derived in
//! their modules.

#[path = "../../tests/common/oracle.rs"]
pub mod oracle;

pub mod cross_entropy;
pub mod input;
pub mod linear;
pub mod seeds;
pub mod shard;
pub mod softmax;
pub mod strided;
pub mod token;

use softmax_kernels::{Error, Isa, Kernels};

/// Outputs start as this signalling NaN (a pattern no kernel writes: arithmetic quiets it).
pub const UNWRITTEN: u32 = 0x7FA5_5A5A;

/// `2^e` as f64.
pub fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

/// The tier under test: one of the available tiers other than the scalar reference.
pub fn tier(sel: u8) -> &'static Kernels {
    let av = Isa::available();
    let simd: Vec<Isa> = av.into_iter().filter(|&i| i != Isa::Scalar).collect();
    let isa = simd[sel as usize % simd.len()];
    Kernels::for_isa(isa).expect("an available tier has a table")
}

/// The scalar reference's table.
pub fn reference() -> &'static Kernels {
    Kernels::for_isa(Isa::Scalar).expect("the scalar tier is always available")
}

/// Long row lengths around [`softmax_kernels::tuning::ONLINE_MIN_COLS`] and the online chunk size.
pub const LONG_COLS: [usize; 16] = [
    65535,
    65536,
    65537,
    65536 + 15,
    65536 + 16,
    65536 + 17,
    65536 + 4095,
    65536 + 4096,
    65536 + 4097,
    69633,
    73727,
    81919,
    98305,
    100_000,
    131_072,
    131_073,
];

/// Very long row lengths (`cols_sel >= 0xFFF0`): tens of thousands, and around the argmax
/// scan's `2^20`-element blocks (`src/arch/generic/cross_entropy.rs`, `ARGMAX_BLOCK`), up to
/// three blocks, so that the maximum, ties of it and NaN can sit in different blocks. Rows of
/// `2^24` and more (where f32 lane indices stop being exact, issue 16 finding 1) are left to
/// `tests/hostile_inputs.rs`: at 64 MiB a buffer, and several buffers and an f64 shadow per
/// call under AddressSanitizer, they would slow every fuzz run that met them; with the blocks
/// no lane index exceeds `2^20` anyway, and the merge of the blocks is what these lengths reach.
pub const VERY_LONG_COLS: [usize; 16] = [
    20_001,
    40_961,
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 1,
    (1 << 20) + 7,
    (1 << 20) + 16,
    (1 << 20) + 17,
    (1 << 20) + 63,
    (1 << 20) + 4097,
    (3 << 19) + 3,
    (1 << 21) - 1,
    1 << 21,
    (1 << 21) + 1,
    (1 << 21) + 15,
    (3 << 20) + 5,
];

/// At most this many floats in a shape of [`VERY_LONG_COLS`] (rows are dropped to fit).
pub const VERY_LONG_MAX: usize = (1 << 22) + (1 << 20);

/// A `[rows, cols]` shape from two selector fields: mostly small rows around the vector widths
/// (1..=70), sometimes up to 2100 columns, rarely (`cols_sel >= 0xFF00`) a long row of
/// [`LONG_COLS`] with at most 3 rows, and for `cols_sel >= 0xFFF0` a very long one of
/// [`VERY_LONG_COLS`] (at most 2 rows, at most [`VERY_LONG_MAX`] floats); `cols_sel == 0`
/// gives 0 columns (an error). Total size at most about 40 000 floats for the short shapes.
pub fn shape(rows_sel: u8, cols_sel: u16, max_rows: usize, long_ok: bool) -> (usize, usize) {
    if cols_sel == 0 {
        return (rows_sel as usize % max_rows.max(1), 0);
    }
    if cols_sel >= 0xFFF0 && long_ok {
        let cols = VERY_LONG_COLS[(cols_sel & 0xF) as usize];
        return ((rows_sel as usize % 3).min(VERY_LONG_MAX / cols), cols);
    }
    if cols_sel >= 0xFF00 && long_ok {
        let cols = LONG_COLS[(cols_sel & 0xF) as usize];
        return (rows_sel as usize % 4, cols);
    }
    let cols = if cols_sel & 0x8000 == 0 {
        1 + cols_sel as usize % 70
    } else {
        1 + (cols_sel & 0x7FFF) as usize % 2100
    };
    let rows = (rows_sel as usize % max_rows.max(1)).min(40_000 / cols);
    (rows, cols)
}

/// Compares the two results' `Ok`/`Err`: the same variant (`std::mem::discriminant`) and, as
/// the argument checks are shared code that runs before any kernel, the same error.
pub fn same_outcome<T>(
    what: &str,
    t: &Result<T, Error>,
    r: &Result<T, Error>,
) -> Result<bool, String> {
    match (t, r) {
        (Ok(_), Ok(_)) => Ok(true),
        (Err(a), Err(b)) => {
            if std::mem::discriminant(a) != std::mem::discriminant(b) || a != b {
                Err(format!(
                    "{what}: errors differ: tier {a:?}, reference {b:?}"
                ))
            } else {
                Ok(false)
            }
        }
        (Ok(_), Err(e)) => Err(format!("{what}: tier Ok, reference Err({e:?})")),
        (Err(e), Ok(_)) => Err(format!("{what}: tier Err({e:?}), reference Ok")),
    }
}

/// Bitwise equality (an output must be untouched after an error).
pub fn unchanged(what: &str, before: &[f32], after: &[f32]) -> Result<(), String> {
    if before.len() != after.len() {
        return Err(format!("{what}: length changed"));
    }
    if let Some(i) = (0..before.len()).find(|&i| before[i].to_bits() != after[i].to_bits()) {
        return Err(format!(
            "{what}: written on error at {i}: {:e} -> {:e}",
            before[i], after[i]
        ));
    }
    Ok(())
}

/// Whether any value has exactly the [`UNWRITTEN`] bits (then "still unwritten" cannot be
/// told from "copied from the input").
pub fn has_unwritten(v: &[f32]) -> bool {
    v.iter().any(|x| x.to_bits() == UNWRITTEN)
}

/// An f32 result compared with a reference value: NaN exactly where the reference is NaN, an
/// infinity where it is (an infinity against a finite value counts as `±2^128`, the magnitude
/// where rounding to f32 overflows, so that results at the overflow edge compare by tolerance),
/// else `|got - want| <= tol`.
pub fn close(got: f32, want: f32, tol: f64) -> Result<(), String> {
    if got.is_nan() || want.is_nan() {
        return if got.is_nan() && want.is_nan() {
            Ok(())
        } else {
            Err(format!("NaN pattern: got {got:e}, reference {want:e}"))
        };
    }
    if got == want {
        return Ok(());
    }
    if got.is_infinite() && want.is_infinite() {
        return if got == want {
            Ok(())
        } else {
            Err(format!("got {got}, reference {want}"))
        };
    }
    let widen = |v: f32| {
        if v.is_infinite() {
            v.signum() as f64 * pow2(128)
        } else {
            v as f64
        }
    };
    let err = (widen(got) - widen(want)).abs();
    if err <= tol {
        Ok(())
    } else {
        Err(format!(
            "got {got:e}, reference {want:e}, |err| {err:e} > tol {tol:e}"
        ))
    }
}

/// [`close`] for f64 results.
pub fn close64(got: f64, want: f64, tol: f64) -> Result<(), String> {
    if got.is_nan() || want.is_nan() {
        return if got.is_nan() && want.is_nan() {
            Ok(())
        } else {
            Err(format!("NaN pattern: got {got:e}, reference {want:e}"))
        };
    }
    if got == want {
        return Ok(());
    }
    if got.is_infinite() || want.is_infinite() {
        return if got == want {
            Ok(())
        } else {
            Err(format!("got {got:e}, reference {want:e}"))
        };
    }
    let err = (got - want).abs();
    if err <= tol {
        Ok(())
    } else {
        Err(format!(
            "got {got:e}, reference {want:e}, |err| {err:e} > tol {tol:e}"
        ))
    }
}

/// Collects the first few failure messages.
#[derive(Default)]
pub struct Report {
    count: usize,
    text: String,
}

impl Report {
    /// Records `r` under `ctx` if it failed.
    pub fn check(&mut self, ctx: impl FnOnce() -> String, r: Result<(), String>) {
        if let Err(e) = r {
            self.count += 1;
            if self.count <= 10 {
                self.text.push_str(&format!("  {}: {e}\n", ctx()));
            }
        }
    }

    /// `Ok` if nothing failed, else the report headed by `what`.
    pub fn finish(self, what: impl FnOnce() -> String) -> Result<(), String> {
        if self.count == 0 {
            Ok(())
        } else {
            Err(format!(
                "{}\n{} failure(s), the first ones:\n{}",
                what(),
                self.count,
                self.text
            ))
        }
    }
}

/// Runs a checker and panics with its report (what the fuzz targets do).
pub fn run_or_panic(name: &str, f: fn(&[u8]) -> Result<(), String>, data: &[u8]) {
    if let Err(e) = f(data) {
        panic!("{name}: divergence\n{e}");
    }
}
