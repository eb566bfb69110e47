//! Fuzz target `linear`: one tier against the scalar reference; see `fuzz_common::linear`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_common::run_or_panic("linear", fuzz_common::linear::check, data);
});
