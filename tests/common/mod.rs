//! Helpers shared by the integration tests: the tiers to run, a record of which tiers ran,
//! guarded and deliberately misaligned buffers, and seeded random logits. The f64 oracle and
//! the contract checks live in [`oracle`] (std only, so fuzz targets can include it).

#![allow(dead_code)]

pub mod child;
pub mod oracle;

use std::collections::BTreeSet;
use std::sync::{Mutex, Once};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use softmax_kernels::{Isa, Kernels};

/// The tiers that ran in this process (each test binary is its own process).
static RAN: Mutex<BTreeSet<Isa>> = Mutex::new(BTreeSet::new());

/// Records that `isa` ran.
pub fn record_ran(isa: Isa) {
    RAN.lock().unwrap_or_else(|e| e.into_inner()).insert(isa);
}

/// The tiers recorded as run in this process so far.
pub fn ran() -> BTreeSet<Isa> {
    RAN.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Prints, once per process, a note for every tier of `Isa::ALL` this CPU cannot run.
pub fn note_unavailable_tiers() {
    static NOTE: Once = Once::new();
    NOTE.call_once(|| {
        for isa in Isa::ALL {
            if !isa.is_available() {
                eprintln!("skipping tier {isa}: not available on this CPU");
            }
        }
    });
}

/// Every tier this CPU can run, slowest first (the scalar reference included); each is recorded
/// as run. Prints the skip note for the others.
pub fn tiers() -> Vec<&'static Kernels> {
    note_unavailable_tiers();
    let available = Isa::available();
    assert!(
        available.starts_with(&[Isa::Scalar, Isa::Portable]),
        "Isa::available() must start with Scalar, Portable: {available:?}"
    );
    available
        .into_iter()
        .map(|isa| {
            let k = Kernels::for_isa(isa)
                .unwrap_or_else(|| panic!("{isa} is listed as available but for_isa is None"));
            assert_eq!(k.isa(), isa, "for_isa({isa}) returned the wrong table");
            record_ran(isa);
            k
        })
        .collect()
}

/// Runs `f` on tier `isa` and records it as run, or prints the skip note when this CPU lacks
/// the tier (the test then passes).
pub fn on_tier(isa: Isa, f: impl FnOnce(&'static Kernels)) {
    match Kernels::for_isa(isa) {
        Some(k) => {
            record_ran(isa);
            f(k)
        }
        None => eprintln!("skipping tier {isa}: not available on this CPU"),
    }
}

/// Stamps one test per tier (`scalar`, `portable`, `avx2`, `avx512`) inside a module `$name`,
/// each running `$f(k)` through [`on_tier`], so that a failure names its tier (as memchr's test
/// macros do). Use it after `#[macro_use] mod common;`.
#[macro_export]
macro_rules! per_tier {
    ($($name:ident => $f:expr),* $(,)?) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn scalar() {
                $crate::common::on_tier(softmax_kernels::Isa::Scalar, $f);
            }
            #[test]
            fn portable() {
                $crate::common::on_tier(softmax_kernels::Isa::Portable, $f);
            }
            #[test]
            fn avx2() {
                $crate::common::on_tier(softmax_kernels::Isa::Avx2, $f);
            }
            #[test]
            fn avx512() {
                $crate::common::on_tier(softmax_kernels::Isa::Avx512, $f);
            }
        }
    )*};
}

/// The SIMD tiers only (every available tier but the scalar reference).
pub fn simd_tiers() -> Vec<&'static Kernels> {
    tiers()
        .into_iter()
        .filter(|k| k.isa() != Isa::Scalar)
        .collect()
}

/// A deterministic generator for `seed`.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` logits uniform in `[-scale, scale)`.
pub fn logits(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// The bit pattern written around every guarded buffer: a signalling NaN no kernel produces.
pub const SENTINEL_BITS: u32 = 0x7FA5_5A5A;
/// Floats of guard before and after the slice.
pub const GUARD: usize = 64;

/// A slice of `len` floats placed `misalign` floats (0..16) past a 64-byte boundary, with
/// [`GUARD`] floats of sentinel before and after it. Kernels get only the exact slice; the
/// guards show any write outside it.
pub struct Guarded {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Guarded {
    /// A guarded slice holding a copy of `data`.
    pub fn from_slice(data: &[f32], misalign: usize) -> Guarded {
        assert!(misalign < 16, "misalign is 0..16 floats");
        let len = data.len();
        let mut buf = vec![f32::from_bits(SENTINEL_BITS); len + 2 * GUARD + 32];
        let base = buf.as_ptr() as usize;
        // First index at or after GUARD whose address is 64-byte aligned.
        let mut a = GUARD;
        while !(base + a * 4).is_multiple_of(64) {
            a += 1;
        }
        let start = a + misalign;
        assert!(start + len + GUARD <= buf.len());
        buf[start..start + len].copy_from_slice(data);
        let g = Guarded { buf, start, len };
        debug_assert_eq!((g.slice().as_ptr() as usize) % 64, misalign * 4);
        g
    }

    /// A guarded slice of `len` floats, each set to `fill`.
    pub fn filled(len: usize, fill: f32, misalign: usize) -> Guarded {
        Guarded::from_slice(&vec![fill; len], misalign)
    }

    /// The slice itself.
    pub fn slice(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The slice itself, mutable.
    pub fn slice_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// A copy of the slice.
    pub fn to_vec(&self) -> Vec<f32> {
        self.slice().to_vec()
    }

    /// Ok if every float of both guards still holds the sentinel.
    pub fn check_guards(&self) -> Result<(), String> {
        let before = &self.buf[self.start - GUARD..self.start];
        let after = &self.buf[self.start + self.len..self.start + self.len + GUARD];
        for (name, g) in [("before", before), ("after", after)] {
            if let Some(i) = g.iter().position(|v| v.to_bits() != SENTINEL_BITS) {
                return Err(format!(
                    "guard {name} the slice was written at offset {i} of {GUARD} \
                     (value {:e}, slice length {})",
                    g[i], self.len
                ));
            }
        }
        Ok(())
    }

    /// Panics with `ctx` if a guard was written.
    pub fn assert_guards(&self, ctx: &str) {
        if let Err(e) = self.check_guards() {
            panic!("{ctx}: {e}");
        }
    }
}

/// Panics with `ctx` on a failed check.
pub fn ok(ctx: impl std::fmt::Display, r: Result<(), String>) {
    if let Err(e) = r {
        panic!("{ctx}\n{e}");
    }
}

/// `ulp(x)`: the gap from `|x|` to the next larger f32.
pub fn ulp(x: f32) -> f32 {
    let a = x.abs();
    f32::from_bits(a.to_bits() + 1) - a
}
