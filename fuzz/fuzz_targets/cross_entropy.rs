//! Fuzz target `cross_entropy`: one tier against the scalar reference; see `fuzz_common::cross_entropy`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_common::run_or_panic("cross_entropy", fuzz_common::cross_entropy::check, data);
});
